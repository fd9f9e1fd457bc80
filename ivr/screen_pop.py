"""The IVR's findings in words a seat reads: each question with the caller's answer, and why.

The decision record (``ivr.interpreter.DecisionRecord``) is for the call's file: node ids, digits,
timestamps.  A seat picking up a stressed caller needs "Is anyone injured? — no one is injured"
instead, in the language of the console, so that nobody asks the caller again.  The flow that ran
the call holds the words (each node's ``label``, each key's ``meaning``, each outcome's reason in
``reasons``); this module joins them to the record.  It is pure: the gateway and the Twilio
ingress attach its result to the call's queue entry, and the seat console only renders it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ivr.flow import Flow, KeyTarget, Label


def _words(label: Label | None, fallback: str) -> dict[str, str]:
    if label is None:
        return {"zh": fallback, "en": fallback}
    return {"zh": label.zh, "en": label.en}


def _target(flow: Flow, node_name: str, digit: str) -> KeyTarget | None:
    node = flow.nodes.get(node_name)
    target = node.keys.get(digit) if node is not None else None
    return target if target is not None else flow.any_node.keys.get(digit)


def describe(flow: Flow, record: Mapping[str, Any]) -> dict[str, Any]:
    """``{"answers": [{node, question, key, answer}], "outcome": {skill, priority, reason, why}}``.

    ``question``, ``answer`` and ``why`` are ``{"zh": ..., "en": ...}``.  A node or key the flow
    no longer knows (the flow was replaced while the caller was in it) falls back to its id.
    """
    answers = []
    for a in record.get("answers") or ():
        node_name, digit = str(a.get("node", "")), str(a.get("digit", ""))
        node = flow.nodes.get(node_name)
        target = _target(flow, node_name, digit)
        answers.append({
            "node": node_name,
            "question": _words(node.label if node is not None else None, node_name),
            "key": digit,
            "answer": _words(target.meaning if target is not None else None, digit),
        })
    outcome = record.get("outcome") or {}
    reason = str(outcome.get("reason") or "")
    return {
        "answers": answers,
        "no_input_at": [str(t.get("node", "")) for t in record.get("timeouts") or ()],
        "outcome": {
            "skill": outcome.get("skill"),
            "priority": outcome.get("priority"),
            "reason": reason,
            "why": _words(flow.reasons.get(reason), reason),
        },
    }
