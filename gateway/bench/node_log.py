"""A call's journey as the node logged it (JSON lines at INFO): answered, keys, routed, offered,
bridged, ended.  The bench reads the node's own log so that IVR and hand-off latencies are the
node's figures, not the load generator's guesses."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class CallJourney:
    call_id: str
    caller: str = ""
    started: float | None = None
    digits: list[tuple[float, str]] = field(default_factory=list)
    routed: float | None = None
    skill: str | None = None
    offers: int = 0
    bridged: float | None = None
    handoff_ms: float | None = None
    ended: float | None = None
    end_state: str | None = None
    outcome: str | None = None


class NodeLog:
    """Follows a node's log file from where the last read stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.calls: dict[str, CallJourney] = {}
        self.problems: dict[str, int] = {}
        #: The first error text of each problem kind, so a report says what went wrong, not only how often.
        self.problem_examples: dict[str, str] = {}

    def mark(self) -> None:
        """Forget what was read: the next ``read`` returns only calls that start after now."""
        self.read()
        self.calls = {}
        self.problems = {}
        self.problem_examples = {}

    def read(self) -> dict[str, CallJourney]:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        for raw in data[:end].splitlines():
            if not raw.startswith(b"{"):
                continue
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            self._take(rec)
        return self.calls

    def _take(self, rec: dict[str, object]) -> None:
        event, ts = rec.get("event"), rec.get("ts")
        if rec.get("level") in ("warning", "error", "critical"):
            self.problems[str(event)] = self.problems.get(str(event), 0) + 1
            if str(event) not in self.problem_examples:
                said = rec.get("error") or rec.get("detail") or rec.get("reason") or ""
                self.problem_examples[str(event)] = str(said)[:300]
        cid = rec.get("call_id")
        if not isinstance(cid, str) or not isinstance(ts, int | float):
            return
        if event == "call_started":
            self.calls[cid] = CallJourney(cid, caller=str(rec.get("caller") or ""), started=float(ts))
            return
        call = self.calls.get(cid)
        if call is None:
            return
        if event == "dtmf":
            call.digits.append((float(ts), str(rec.get("digit"))))
        elif event == "journey" and rec.get("cause") == "ivr_routed":
            # detail: "<skill> p<priority> (<reason>)" (journey.call.CallJourney.routed)
            call.routed, call.skill = float(ts), str(rec.get("detail") or "").split(" ", 1)[0]
        elif event == "journey" and rec.get("cause") == "offered":
            call.offers += 1
        elif event == "bridged":
            call.bridged = float(ts)
            ms = rec.get("handoff_ms")
            call.handoff_ms = float(ms) if isinstance(ms, int | float) else None
        elif event == "call_ended":
            call.ended, call.end_state, call.outcome = float(ts), str(rec.get("ended_by")), str(rec.get("outcome"))
