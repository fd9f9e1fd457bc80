"""Settings, the worker channel protocol, SIP parsing and the Kamailio config (no network)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gateway import channel as ch
from gateway.kamailio import Destination, find_kamailio, render_config, render_dispatcher_list
from gateway.pjsip import header_value, request_uri_user, sip_user_of
from gateway.settings import ConfigError, load_settings


def test_settings_defaults_run_on_one_laptop(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(__import__("os").environ):
        if k.startswith("HANDOFF_"):
            monkeypatch.delenv(k)
    s = load_settings({})
    assert (s.sip_host, s.sip_port, s.api_port) == ("127.0.0.1", 5060, 8000)
    assert s.service_numbers == ["122"] and s.ring_timeout == 20
    assert s.database_url.startswith("sqlite+aiosqlite:///") and s.database_url.endswith("var/handoff122.sqlite3")


def test_flags_beat_environment_beat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "node.yaml"
    cfg.write_text("sip-port: 5070\napi_port: 8100\nring_timeout: 9\n")
    monkeypatch.setenv("HANDOFF_API_PORT", "8200")
    monkeypatch.setenv("HANDOFF_SERVICE_NUMBERS", "122,12122")
    s = load_settings({"config": cfg, "ring_timeout": 12.5})
    assert s.sip_port == 5070 and s.api_port == 8200 and s.ring_timeout == 12.5
    assert s.service_numbers == ["122", "12122"]


@pytest.mark.parametrize(("values", "needle"), [
    ({"sip_port": 70000}, "sip_port"),
    ({"workers": 0}, "workers"),
    ({"worker_callers": 3}, "worker_callers"),
    ({"log_level": "chatty"}, "log_level"),
    ({"service_numbers": "1 2 2!"}, "service_numbers"),
    ({"cluster": "true"}, "cluster mode needs a PostgreSQL db_url"),  # SQLite is one node's database
    ({"cluster_node_id": "node 1"}, "cluster_node_id"),
])
def test_bad_settings_are_one_line(values: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(values)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_cluster_mode_settings() -> None:
    s = load_settings({"cluster": "true", "cluster_node_id": "node-2", "cluster_lease_s": 5,
                       "db_url": "postgresql+asyncpg://postgres@127.0.0.1:5432/handoff"})
    assert (s.cluster, s.cluster_node_id, s.cluster_lease_s) == (True, "node-2", 5.0)
    assert load_settings({}).cluster is False


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file"):
        load_settings({"config": tmp_path / "nope.yaml"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings({"config": bad})


def test_channel_round_trip_and_version_check() -> None:
    msg = ch.DialSeat(call_id="c-1", leg_id="c-1-1", uri="sip:s1@127.0.0.1:5091",
                      headers={"X-Handoff-Skill": "rescue"})
    assert ch.decode_command(ch.encode(msg)) == msg
    ev = ch.Dtmf(call_id="c-1", digit="5", method="info", at=1.0)
    assert ch.decode_event(ch.encode(ev)) == ev
    with pytest.raises(ch.ProtocolError, match="version"):
        ch.decode_event(b'{"v": 2, "type": "dtmf"}')
    with pytest.raises(ch.ProtocolError):
        ch.decode_event(b'{"v": 1, "type": "no_such_thing"}')
    with pytest.raises(ch.ProtocolError, match="JSON"):
        ch.decode_command(b"garbage")


def test_sip_parsing() -> None:
    inv = ("INVITE sip:122@127.0.0.1:5060;transport=udp SIP/2.0\r\nFrom: \"A\" <sip:13800138000@x>;tag=1\r\n"
           "call-id: abc@h\r\n\r\nv=0")
    assert request_uri_user(inv) == "122"
    assert header_value(inv, "Call-ID") == "abc@h"
    assert sip_user_of(header_value(inv, "From") or "") == "13800138000"
    assert sip_user_of("<tel:+8613800138000>") == "+8613800138000"
    assert sip_user_of("garbage") == ""


@pytest.mark.skipif(find_kamailio("auto") is None, reason="kamailio not installed")
def test_kamailio_accepts_the_generated_config(tmp_path: Path) -> None:
    ds = tmp_path / "dispatcher.list"
    ds.write_text(render_dispatcher_list([Destination(0, "127.0.0.1", 5160), Destination(1, "127.0.0.1", 5161)], 2))
    assert "duid=w1;maxload=2" in ds.read_text()
    cfg = tmp_path / "k.cfg"
    cfg.write_text(render_config(host="127.0.0.1", port=5999, service_numbers=["122", "+86122"],
                                 rpc_socket=tmp_path / "rpc.sock", dispatcher_list=ds, retry_after_s=7))
    kam = find_kamailio("auto")
    assert kam is not None
    p = subprocess.run([kam, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
