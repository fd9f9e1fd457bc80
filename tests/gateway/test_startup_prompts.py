"""``handoff122 serve`` refuses to start, in one line naming the file, when a prompt a caller may
hear is missing or unreadable: found at start-up, never by a caller left in silence."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from ivr.flow import DEFAULT_FLOW_PATH, DEFAULT_PROMPTS_DIR
from tests.conftest import serve_port_args


def flow_copy(tmp_path: Path) -> Path:
    audio = tmp_path / "audio"
    shutil.copytree(DEFAULT_PROMPTS_DIR, audio)
    data = yaml.safe_load(DEFAULT_FLOW_PATH.read_text(encoding="utf-8"))
    data["prompts_dir"] = str(audio)
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def serve(tmp_path: Path, flow: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(tmp_path / "v"),
                           "--flow", str(flow), *serve_port_args(), "--api-port", "0"],
                          capture_output=True, text=True, timeout=60)


def test_a_deleted_prompt_wav_stops_serve_with_its_name(tmp_path: Path) -> None:
    flow = flow_copy(tmp_path)
    (tmp_path / "audio" / "fled.wav").unlink()
    p = serve(tmp_path, flow)
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "fled.wav" in p.stderr, p.stderr
    assert not (tmp_path / "v" / "run" / "node.pid").exists()  # nothing was started


def test_an_empty_prompt_wav_stops_serve_with_its_name(tmp_path: Path) -> None:
    flow = flow_copy(tmp_path)
    (tmp_path / "audio" / "dispute.wav").write_bytes(b"")
    p = serve(tmp_path, flow)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "dispute.wav" in lines[0] and "not a readable WAV" in lines[0], p.stderr
