"""/metrics after real SIP calls: every counter below was produced by a call, none fed by the test."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from tests.node_harness import RunningNode, run_caller, seat_reports, start_node, start_seat
from tests.sipp_driver import run_sipp


def samples(node: RunningNode) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for fam in text_string_to_metric_families(node.metrics()):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(node: RunningNode, name: str, **labels: str) -> float | None:
    return samples(node).get((name, frozenset(labels.items())))


def test_metrics_count_what_real_calls_did(tmp_path: Path) -> None:
    p1 = free_port()
    seats = f"seats:\n  - {{id: s1, contact: 'sip:s1@127.0.0.1:{p1}', skills: [intake_guidance], status: available}}\n"
    node = start_node(tmp_path, workers=2, seats_yaml=seats)
    try:
        start_seat(node, "s1", p1, "--answer-after", "0.5")
        res = run_caller(node, "0", stay=3)                    # 0: a person, intake_guidance
        assert res["answered"] and res["bridged"], res
        call = node.wait_for(lambda: (c := node.call(seat_reports(node, "s1")[0]["call_id"]))["end_reason"] and c)
        reason = call["ivr"]["reason"]
        assert reason
        r = run_sipp("uac_cancel.xml", node.sip_port, service="122")   # a caller who gives up while it rings
        assert r.ok, r.stdout + r.log

        node.wait_for(lambda: value(node, "handoff122_calls_ended_total", end_reason="caller_cancelled") == 1.0)
        node.wait_for(lambda: value(node, "handoff122_calls_ended_total", end_reason="completed") == 1.0)
        # hand-off latency: from the seat's 200 OK to the bridge, by skill, and it is short
        assert value(node, "handoff122_handoff_latency_seconds_count", skill="intake_guidance") == 1.0
        assert value(node, "handoff122_handoff_latency_seconds_sum", skill="intake_guidance") < 0.5
        # ring time apart: the seat took its 0.5 s to answer
        assert value(node, "handoff122_seat_ring_seconds_count", skill="intake_guidance", outcome="answered") == 1.0
        assert value(node, "handoff122_seat_ring_seconds_sum", skill="intake_guidance", outcome="answered") >= 0.45
        # the IVR's decision, by skill and reason
        outcomes = {dict(k[1])["outcome"]: v for k, v in samples(node).items()
                    if k[0] == "handoff122_ivr_outcomes_total" and dict(k[1]).get("skill") == "intake_guidance"}
        assert outcomes == {reason: 1.0}, outcomes
        # the CANCEL is the caller's choice, not a SIP error
        errors = {k: v for k, v in samples(node).items() if k[0] == "handoff122_sip_errors_total"}
        assert errors == {}, errors
        assert node.journey_errors() == []
    finally:
        node.stop()
