"""Does a flow make sense? Every problem, with where it is, so a centre can fix a file in one pass.

The shape is checked by the pydantic schema (`ivr.flow`); this module adds what a schema cannot
say: targets that exist, nodes a caller can reach, no way to circle forever, audio for every
prompt, a key mapped once, real seats and priorities, and a human at the end of every doubt
(DOMAIN.md safety rule: timeout, wrong key and 0 go to a person).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ivr.flow import (
    DTMF_KEYS,
    NAME_PATTERN,
    PRIORITY_MAX,
    PRIORITY_MIN,
    FlowHead,
    FlowProblem,
    KeyTarget,
    Node,
    OutcomeRule,
    resolve_prompts_dir,
)
from ivr.source import LocatedMap, YamlSyntaxError, line_of, parse_located
from routing.skills import HUMAN_FALLBACK_SKILLS, SKILLS

Path_ = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


class _Findings:
    """Problems in document order of discovery, each with its line when the source has one."""

    def __init__(self, data: Any) -> None:
        self.data = data
        self.problems: list[FlowProblem] = []

    def add(self, path: Path_, message: str, line: int | None = None) -> None:
        location = ".".join(str(p) for p in path) or "(top)"
        self.problems.append(FlowProblem(location, message, line if line is not None else line_of(self.data, path)))

    def schema_errors(self, prefix: Path_, error: ValidationError) -> None:
        for e in error.errors():
            message = str(e["msg"]).removeprefix("Value error, ")
            self.add(prefix + tuple(e["loc"]), message)


def validate_flow(data: Any, base_dir: Path) -> list[FlowProblem]:
    """Every problem of parsed flow data (`base_dir`: the flow file's directory)."""
    found = _Findings(data)
    if not isinstance(data, dict):
        found.add((), "a flow file is a mapping (name, start, any_node, nodes, ...)")
        return found.problems
    _duplicate_keys(found, data, ())

    head_fields = {k: v for k, v in data.items() if k != "nodes"}
    head = _parse(found, (), FlowHead, head_fields)
    nodes = _parse_nodes(found, data.get("nodes"))

    if head is not None:
        _check_any_node(found, head)
        _check_fallbacks(found, head)
        _check_reason_labels(found, head, nodes)
        _check_audio(found, ("invalid_prompt", "id"), head.invalid_prompt.id,
                     resolve_prompts_dir(data.get("prompts_dir"), base_dir))
    node_names = set(nodes) | _names_of_broken_nodes(data.get("nodes"))
    for name, node in (nodes or {}).items():
        _check_node(found, name, node, node_names, head)
        _check_audio(found, ("nodes", name, "prompt", "id"), node.prompt.id,
                     resolve_prompts_dir(data.get("prompts_dir"), base_dir))
    start = data.get("start")
    if head is not None and start not in node_names:
        found.add(("start",), f"unknown start node '{start}'")
    # The graph is judged only when every node could be read: a broken node's edges are unknown.
    if head is not None and nodes and set(nodes) == node_names and start in nodes:
        _check_graph(found, head.start, nodes)
    return found.problems


def _parse(found: _Findings, path: Path_, model: type[M], raw: Any) -> M | None:
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        found.schema_errors(path, e)
        return None


def _parse_nodes(found: _Findings, raw: Any) -> dict[str, Node]:
    if not isinstance(raw, dict) or not raw:
        found.add(("nodes",), "a flow needs a mapping of at least one node")
        return {}
    nodes: dict[str, Node] = {}
    for name, body in raw.items():
        if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
            found.add(("nodes", str(name)), "a node name is lower-case letters, digits and _")
            continue
        node = _parse(found, ("nodes", name), Node, body)
        if node is not None:
            nodes[name] = node
    return nodes


def _names_of_broken_nodes(raw: Any) -> set[str]:
    return {str(k) for k in raw} if isinstance(raw, dict) else set()


def _duplicate_keys(found: _Findings, value: Any, path: Path_) -> None:
    """Keys written twice, including `1:` next to `"1":` (both are key 1 on a keypad)."""
    if isinstance(value, LocatedMap):
        for key, line in value.duplicates:
            found.add((*path, str(key)), f"'{key}' is written twice (first at line {value.key_lines.get(key)})",
                      line)
        if (path and path[-1] == "keys") or path == ("any_node",):
            seen: dict[str, Any] = {}
            for key in value:
                if str(key) in seen and seen[str(key)] != key:
                    found.add((*path, str(key)), f"key {key} is mapped twice", value.key_lines.get(key))
                seen.setdefault(str(key), key)
    if isinstance(value, dict):
        for key, child in value.items():
            _duplicate_keys(found, child, (*path, str(key)))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            _duplicate_keys(found, child, (*path, i))


def _check_outcome(found: _Findings, path: Path_, outcome: OutcomeRule | KeyTarget) -> None:
    if outcome.skill not in SKILLS:
        found.add((*path, "skill"), f"unknown skill '{outcome.skill}' (known: {', '.join(SKILLS)})")
    priority = outcome.priority
    if priority is None or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        found.add((*path, "priority"),
                  f"bad priority {priority}: {PRIORITY_MIN} (most urgent) to {PRIORITY_MAX}")


def _check_key(found: _Findings, path: Path_, key: str) -> None:
    if key not in DTMF_KEYS:
        found.add(path, f"'{key}' is not a keypad key (0-9, *, #, A-D)")


_LABEL_FORM = "{zh: ..., en: ...}"


def _check_node(found: _Findings, name: str, node: Node, node_names: set[str],
                head: FlowHead | None) -> None:
    global_keys = head.any_node.keys if head is not None else {}
    if node.label is None:
        found.add(("nodes", name, "label"), f"the question needs a label {_LABEL_FORM}: the seat's screen shows it")
    for key, target in node.keys.items():
        path: Path_ = ("nodes", name, "keys", key)
        _check_key(found, path, key)
        _check_meaning(found, path, target)
        if key in global_keys:
            found.add(path, f"key {key} is mapped twice: any_node.keys.{key} already maps it at every node")
        if target.kind == "goto" and target.goto not in node_names:
            found.add((*path, "goto"), f"unknown target node '{target.goto}'")
        elif target.kind == "outcome":
            _check_outcome(found, path, target)


def _check_meaning(found: _Findings, path: Path_, target: KeyTarget) -> None:
    if target.kind != "repeat" and target.meaning is None:
        found.add((*path, "meaning"), f"the answer needs a meaning {_LABEL_FORM}: the seat's screen shows it")


def _check_reason_labels(found: _Findings, head: FlowHead, nodes: dict[str, Node]) -> None:
    """Every reason a call can be routed for has words, so the seat reads why, not a code."""
    used: list[str] = [head.on_timeout_exhausted.reason, head.on_invalid_exhausted.reason]
    used += [t.reason for t in head.any_node.keys.values() if t.reason]
    used += [t.reason for n in nodes.values() for t in n.keys.values() if t.reason]
    for reason in dict.fromkeys(used):
        if reason not in head.reasons:
            found.add(("reasons", reason), f"outcome reason '{reason}' needs a label {_LABEL_FORM}")


def _check_any_node(found: _Findings, head: FlowHead) -> None:
    for key, target in head.any_node.keys.items():
        path: Path_ = ("any_node", "keys", key)
        _check_key(found, path, key)
        _check_meaning(found, path, target)
        if target.kind == "goto":
            found.add(path, "a key valid at every node ends in an outcome or repeats (a goto could loop)")
        elif target.kind == "outcome":
            _check_outcome(found, path, target)


def _check_fallbacks(found: _Findings, head: FlowHead) -> None:
    humans = ", ".join(sorted(HUMAN_FALLBACK_SKILLS))
    for field in ("on_timeout_exhausted", "on_invalid_exhausted"):
        outcome: OutcomeRule = getattr(head, field)
        _check_outcome(found, (field,), outcome)
        if outcome.skill in SKILLS and outcome.skill not in HUMAN_FALLBACK_SKILLS:
            found.add((field, "skill"), f"no human fallback: '{outcome.skill}' is not a fallback seat ({humans})")
    zero = head.any_node.keys.get("0")
    if zero is None:
        found.add(("any_node",), f"no human fallback: key 0 must lead to a person ({humans}) at every node")
    elif zero.kind != "outcome" or zero.skill not in HUMAN_FALLBACK_SKILLS:
        found.add(("any_node", "keys", "0"), f"no human fallback: key 0 must lead to a person ({humans})")


def _check_audio(found: _Findings, path: Path_, prompt_id: str, prompts_dir: Path) -> None:
    wav = prompts_dir / f"{prompt_id}.wav"
    if not wav.is_file():
        found.add(path, f"missing prompt audio {wav}")


def _check_graph(found: _Findings, start: str, nodes: dict[str, Node]) -> None:
    for name, node in nodes.items():
        if not any(t.kind in ("goto", "outcome") for t in node.keys.values()):
            found.add(("nodes", name, "keys"), "no exit: no key leads to another node or an outcome")

    reached: set[str] = set()
    pending = [start]
    while pending:
        name = pending.pop()
        if name not in reached:
            reached.add(name)
            pending.extend(t.goto for t in nodes[name].keys.values() if t.goto in nodes)
    for name in nodes:
        if name not in reached:
            found.add(("nodes", name), f"unreachable: no key path from start '{start}' leads here")

    # Depth-first search; an edge back into the current path is a loop a caller could circle forever.
    on_path: list[str] = []
    finished: set[str] = set()

    def visit(name: str) -> None:
        on_path.append(name)
        for key, target in nodes[name].keys.items():
            nxt = target.goto
            if nxt is None or nxt not in nodes:  # an unknown target is reported on its own
                continue
            if nxt in on_path:
                cycle = " -> ".join([*on_path[on_path.index(nxt):], nxt])
                found.add(("nodes", name, "keys", key),
                          f"loops forever: {cycle}; every key path must end in an outcome")
            elif nxt not in finished:
                visit(nxt)
        on_path.pop()
        finished.add(name)

    for name in [start, *nodes]:
        if name not in finished:
            visit(name)


def _format(path: Path | str, problem: FlowProblem) -> str:
    where = f"{path}:{problem.line}" if problem.line is not None else str(path)
    return f"{where}: {problem.location}: {problem.message}"


def check_flow_main(path: Path | str) -> int:
    """`handoff122 check-flow FILE`: 0 and one ok line, or 1 and one located line per problem."""
    path = Path(path)
    problems: Sequence[FlowProblem]
    try:
        data = parse_located(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        problems = [FlowProblem("file", f"cannot read: {e}")]
    except YamlSyntaxError as e:
        problems = [FlowProblem("file", str(e), e.line)]
    else:
        problems = validate_flow(data, path.resolve().parent)
    if problems:
        for problem in problems:
            print(_format(path, problem), file=sys.stderr)
        print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"ok: {path} ({len(data['nodes'])} nodes)")
    return 0
