"""The IVR flow as data: the typed schema of a flow file (`ivr.loader.load_flow` reads one).

A centre edits its eligibility rules in YAML, not in code (DOMAIN.md: regions differ), so the file
format is the contract. Its shape is checked here; its meaning (reachability, loops, human
fallbacks, prompt audio) is checked in `ivr.check`, and a flow is only ever loaded when both pass.

    name: default
    start: welcome
    any_node:                      # keys valid at every node
      "0": {skill: intake_guidance, priority: 3, reason: asked_for_human}
      "*": repeat
    on_timeout_exhausted: {skill: intake_guidance, priority: 3, reason: no_input}
    on_invalid_exhausted: {skill: intake_guidance, priority: 3, reason: invalid_input}
    nodes:
      welcome:
        prompt: {id: welcome, text: "..."}      # prompts_dir/welcome.wav
        timeout: 6                              # seconds of silence after the prompt ends
        retries: 2                              # re-prompts before the fallback outcome
        keys:
          "1": {goto: injury}
          "2": {skill: accident_query, priority: 4, reason: earlier_accident_query}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

#: Keys a telephone keypad can send (RFC 4733 events 0-15).
DTMF_KEYS: frozenset[str] = frozenset("0123456789*#ABCD")
PRIORITY_MIN = 1  # the most urgent
PRIORITY_MAX = 5
#: Where the shipped Mandarin prompts live; a flow may name another directory.
DEFAULT_PROMPTS_DIR = Path(__file__).resolve().parent / "prompts" / "zh"
DEFAULT_FLOW_PATH = Path(__file__).resolve().parent / "flows" / "default.yaml"
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"


@dataclass(frozen=True)
class FlowProblem:
    """One thing wrong with a flow file, located by a dotted path (`nodes.driver.keys.1`)."""

    location: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class FlowInvalid(ValueError):
    def __init__(self, problems: list[FlowProblem], source: str = "flow") -> None:
        self.problems = problems
        self.source = source
        first = problems[0] if problems else FlowProblem("", "invalid")
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{source}: {first}{more}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Label(_Strict):
    """Words for people, in both languages of the seat console (the caller hears the prompt)."""

    zh: str = Field(min_length=1, max_length=200)
    en: str = Field(min_length=1, max_length=200)


class Prompt(_Strict):
    id: str = Field(pattern=NAME_PATTERN, description="names the WAV file <prompts_dir>/<id>.wav")
    text: str = Field(min_length=1, description="what the recording says (for people reading the flow)")


class OutcomeRule(_Strict):
    """Where a call ends in the IVR: the seat type that takes it, how urgent, and why."""

    skill: str
    priority: int
    reason: str = Field(pattern=NAME_PATTERN)


class KeyTarget(_Strict):
    """What one key does: go to another node, end in an outcome, or replay the prompt.

    Written in YAML as `{goto: node}`, `{skill: ..., priority: ..., reason: ...}` or `repeat`.
    """

    goto: str | None = None
    skill: str | None = None
    priority: int | None = None
    reason: str | None = Field(None, pattern=NAME_PATTERN)
    repeat: bool = False
    #: What pressing the key says ("1: someone is injured"); the seat reads it on the screen pop.
    meaning: Label | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if value == "repeat":
            return {"repeat": True}
        if isinstance(value, str):
            raise ValueError(f"'{value}' is not a target; write {{goto: {value}}}, an outcome, or repeat")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> KeyTarget:
        outcome_fields = [self.skill, self.priority, self.reason]
        kinds = [self.goto is not None, any(f is not None for f in outcome_fields), self.repeat]
        if sum(kinds) != 1:
            raise ValueError("a key leads to exactly one of: {goto: NODE}, an outcome "
                             "{skill, priority, reason}, or repeat")
        if kinds[1] and any(f is None for f in outcome_fields):
            raise ValueError("an outcome needs skill, priority and reason")
        return self

    @property
    def kind(self) -> Literal["goto", "outcome", "repeat"]:
        if self.goto is not None:
            return "goto"
        return "repeat" if self.repeat else "outcome"

    @property
    def outcome(self) -> OutcomeRule | None:
        if self.skill is None or self.priority is None or self.reason is None:
            return None
        return OutcomeRule(skill=self.skill, priority=self.priority, reason=self.reason)


def _keys_as_strings(value: Any) -> Any:
    # YAML reads an unquoted `1:` as the integer 1; a centre should not have to quote digits.
    # If both `1:` and `"1":` are written, the first wins here and `ivr.check` reports the second.
    if isinstance(value, dict):
        keys: dict[str, Any] = {}
        for k, v in value.items():
            keys.setdefault(str(k), v)
        return keys
    return value


class Node(_Strict):
    prompt: Prompt
    #: The question as the seat reads it ("Is anyone injured?"); `ivr.check` requires it.
    label: Label | None = None
    keys: dict[str, KeyTarget]
    timeout: float = Field(6.0, gt=0, le=60, description="seconds of silence after the prompt ends")
    retries: int = Field(2, ge=0, le=5, description="re-prompts after silence or a wrong key")
    max_repeats: int = Field(3, ge=0, le=10, description="`*` replays; more count as a wrong key")

    _normalise_keys = field_validator("keys", mode="before")(_keys_as_strings)


class AnyNode(_Strict):
    keys: dict[str, KeyTarget] = Field(default_factory=dict)

    _normalise_keys = field_validator("keys", mode="before")(_keys_as_strings)

    @model_validator(mode="before")
    @classmethod
    def _bare_keys(cls, value: Any) -> Any:
        # `any_node:` may list the keys directly, like a node's `keys:`.
        if isinstance(value, dict) and "keys" not in value:
            return {"keys": value}
        return value


class FlowHead(_Strict):
    """Everything in a flow file but its nodes (validated apart, so one bad node hides nothing)."""

    version: Literal[1] = 1
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    start: str
    prompts_dir: Path = DEFAULT_PROMPTS_DIR
    invalid_prompt: Prompt = Prompt(id="invalid", text="您的输入有误，请重新选择。")
    any_node: AnyNode = AnyNode()
    on_timeout_exhausted: OutcomeRule
    on_invalid_exhausted: OutcomeRule
    #: Each outcome reason in words (`liability_dispute`: "the parties dispute liability").
    reasons: dict[str, Label] = Field(default_factory=dict)


class Flow(FlowHead):
    nodes: dict[str, Node] = Field(min_length=1)

    _wav_paths: dict[str, Path] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        # Paths are built once per flow, not once per played prompt (the interpreter is hot).
        prompts = [n.prompt for n in self.nodes.values()] + [self.invalid_prompt]
        self._wav_paths.update({p.id: self.prompts_dir / f"{p.id}.wav" for p in prompts})

    def wav_path(self, prompt_id: str) -> Path:
        path = self._wav_paths.get(prompt_id)
        return path if path is not None else self.prompts_dir / f"{prompt_id}.wav"


def resolve_prompts_dir(raw: Any, base_dir: Path) -> Path:
    """A flow's `prompts_dir` is relative to the flow file; absent means the shipped prompts."""
    if raw is None:
        return DEFAULT_PROMPTS_DIR
    path = Path(str(raw))
    return path if path.is_absolute() else (base_dir / path).resolve()
