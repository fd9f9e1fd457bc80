"""The IVR interpreter: one call's walk through a flow, as a pure state machine.

Events go in (call answered, digit, prompt finished, timer fired) with an explicit `now`; actions
come out (play, stop playing, start/cancel a timer, route). No clock, no I/O, so the SIP gateway and
the Twilio webhooks drive the very same decisions, and a test can replay a call exactly.

Tokens: every `Play` and `StartTimer` carries a fresh token. Only the latest one is live; a
prompt-end or timer from an earlier prompt (after barge-in, `*`, a re-prompt) is stale and ignored,
so a late event from the media side can never skip a question.

Safety (DOMAIN.md): there is no hang-up action. Every path ends in `Route` to a seat, and any doubt
(silence, wrong keys, 0) ends at the flow's human fallback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ivr.flow import DTMF_KEYS, Flow, Node, OutcomeRule


@dataclass(frozen=True, slots=True)
class Outcome:
    """Which seat type takes the call, how urgently, why, and at which node it was decided."""

    skill: str
    priority: int
    reason: str
    node: str


@dataclass(frozen=True, slots=True)
class Play:
    prompt_id: str
    path: Path
    token: int


@dataclass(frozen=True, slots=True)
class StopPlayback:
    """Barge-in: the caller pressed a key during a prompt."""


@dataclass(frozen=True, slots=True)
class StartTimer:
    seconds: float
    token: int


@dataclass(frozen=True, slots=True)
class CancelTimer:
    """The no-input timer `token` no longer matters (a key came). Safe to ignore: it would be stale."""

    token: int


@dataclass(frozen=True, slots=True)
class Route:
    outcome: Outcome


Action = Play | StopPlayback | StartTimer | CancelTimer | Route

RuleKind = Literal["key", "any_node", "timeout_exhausted", "invalid_exhausted"]
KeyResult = Literal["accepted", "repeat", "invalid"]


@dataclass(frozen=True, slots=True)
class PromptPlayed:
    prompt_id: str
    node: str
    at: float


@dataclass(frozen=True, slots=True)
class KeyPressed:
    digit: str
    node: str
    at: float
    result: KeyResult
    barge_in: bool


@dataclass(frozen=True, slots=True)
class NoInput:
    node: str
    at: float


@dataclass(frozen=True, slots=True)
class FiredRule:
    """The rule that decided the outcome: a node's key, a key valid everywhere, or a fallback."""

    kind: RuleKind
    node: str
    key: str | None


@dataclass(slots=True)
class DecisionRecord:
    """What the caller heard and pressed and why the call went where it went; stored with the call."""

    call_id: str
    flow: str
    started_at: float | None = None
    decided_at: float | None = None
    prompts: list[PromptPlayed] = field(default_factory=list)
    keys: list[KeyPressed] = field(default_factory=list)
    timeouts: list[NoInput] = field(default_factory=list)
    rule: FiredRule | None = None
    outcome: Outcome | None = None

    def to_dict(self) -> dict[str, Any]:
        outcome = self.outcome
        return {
            "call_id": self.call_id,
            "flow": self.flow,
            "started_at": self.started_at,
            "decided_at": self.decided_at,
            "prompts": [{"id": p.prompt_id, "node": p.node, "at": p.at} for p in self.prompts],
            "keys": [{"digit": k.digit, "node": k.node, "at": k.at, "result": k.result, "barge_in": k.barge_in}
                     for k in self.keys],
            "answers": [{"node": k.node, "digit": k.digit, "at": k.at}
                        for k in self.keys if k.result == "accepted"],
            "timeouts": [{"node": t.node, "at": t.at} for t in self.timeouts],
            "rule": None if self.rule is None else
            {"kind": self.rule.kind, "node": self.rule.node, "key": self.rule.key},
            "outcome": None if outcome is None else
            {"skill": outcome.skill, "priority": outcome.priority, "reason": outcome.reason, "node": outcome.node},
            "skill": None if outcome is None else outcome.skill,
            "priority": None if outcome is None else outcome.priority,
            "reason": None if outcome is None else outcome.reason,
            "node": None if outcome is None else outcome.node,
        }


_Phase = Literal["idle", "prompting", "waiting", "done"]


class IvrSession:
    """One caller's pass through a flow. Each method returns the actions to carry out, in order."""

    def __init__(self, flow: Flow, call_id: str) -> None:
        self.flow = flow
        self.call_id = call_id
        self.record = DecisionRecord(call_id=call_id, flow=flow.name)
        self._phase: _Phase = "idle"
        self._node_name = flow.start
        self._node: Node = flow.nodes[flow.start]
        self._token = 0            # the only live token (a prompt's or the no-input timer's)
        self._queue: list[str] = []  # prompt ids still to play before the timer starts
        self._failures = 0         # silences and wrong keys at this node
        self._repeats = 0          # `*` presses at this node

    @property
    def done(self) -> bool:
        return self._phase == "done"

    @property
    def outcome(self) -> Outcome | None:
        return self.record.outcome

    @property
    def node(self) -> str:
        return self._node_name

    # ---- events -------------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        """The call was answered: greet with the start node's prompt."""
        if self._phase != "idle":
            return []
        self.record.started_at = now
        return self._prompt([self._node.prompt.id], now)

    def digit(self, d: str, now: float) -> list[Action]:
        phase = self._phase
        if phase == "idle" or phase == "done":
            return []
        actions: list[Action] = [StopPlayback()] if phase == "prompting" else [CancelTimer(self._token)]
        node = self._node
        target = node.keys.get(d)
        rule_kind: RuleKind = "key"
        if target is None:
            target = self.flow.any_node.keys.get(d)
            rule_kind = "any_node"
        barge_in = phase == "prompting"
        if target is None or d not in DTMF_KEYS or (target.repeat and self._repeats >= node.max_repeats):
            self._log_key(d, now, "invalid", barge_in)
            actions += self._failed(now, "invalid_exhausted", self.flow.on_invalid_exhausted)
            return actions
        if target.repeat:
            self._repeats += 1
            self._log_key(d, now, "repeat", barge_in)
            actions += self._prompt([node.prompt.id], now)
            return actions
        self._log_key(d, now, "accepted", barge_in)
        if target.goto is not None:
            self._node_name = target.goto
            self._node = self.flow.nodes[target.goto]
            self._failures = 0
            self._repeats = 0
            actions += self._prompt([self._node.prompt.id], now)
            return actions
        outcome = target.outcome
        assert outcome is not None  # the schema guarantees goto, repeat or a complete outcome
        actions.append(self._decide(outcome, FiredRule(rule_kind, self._node_name, d), now))
        return actions

    def prompt_finished(self, token: int, now: float) -> list[Action]:
        if self._phase != "prompting" or token != self._token:
            return []
        if self._queue:
            return [self._play(self._queue.pop(0), now)]
        self._phase = "waiting"
        self._token += 1
        return [StartTimer(self._node.timeout, self._token)]

    def timeout(self, token: int, now: float) -> list[Action]:
        if self._phase != "waiting" or token != self._token:
            return []
        self.record.timeouts.append(NoInput(self._node_name, now))
        return self._failed(now, "timeout_exhausted", self.flow.on_timeout_exhausted)

    # ---- decisions ----------------------------------------------------------------------------

    def _failed(self, now: float, kind: RuleKind, fallback: OutcomeRule) -> list[Action]:
        """Silence or a wrong key: ask again, or after `retries` re-prompts hand over to a person."""
        self._failures += 1
        if self._failures > self._node.retries:
            return [self._decide(fallback, FiredRule(kind, self._node_name, None), now)]
        if kind == "invalid_exhausted":
            return self._prompt([self.flow.invalid_prompt.id, self._node.prompt.id], now)
        return self._prompt([self._node.prompt.id], now)

    def _decide(self, rule: OutcomeRule, fired: FiredRule, now: float) -> Route:
        self._phase = "done"
        self._queue.clear()
        outcome = Outcome(rule.skill, rule.priority, rule.reason, self._node_name)
        self.record.outcome = outcome
        self.record.rule = fired
        self.record.decided_at = now
        return Route(outcome)

    def _prompt(self, prompt_ids: list[str], now: float) -> list[Action]:
        self._phase = "prompting"
        self._queue = prompt_ids[1:]
        return [self._play(prompt_ids[0], now)]

    def _play(self, prompt_id: str, now: float) -> Play:
        self._token += 1
        self.record.prompts.append(PromptPlayed(prompt_id, self._node_name, now))
        return Play(prompt_id, self.flow.wav_path(prompt_id), self._token)

    def _log_key(self, d: str, now: float, result: KeyResult, barge_in: bool) -> None:
        self.record.keys.append(KeyPressed(d, self._node_name, now, result, barge_in))
