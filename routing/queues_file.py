"""The ``queues:`` section of the seats file: per-skill routing policy, validated with locations.

```yaml
queues:
  online_determination: {strategy: longest_idle, sl_threshold_s: 20, wrap_up_s: 30, announce_every_s: 30,
                         escalate: [{after_s: 60, also: intake_guidance}, {after_s: 120, priority: 1}]}
```

What an operator comparing it with Asterisk's ``queues.conf`` or FreeSWITCH's ``callcenter.conf``
will look for: the strategy (``longest_idle`` ~ ``leastrecent`` / ``longest-idle-agent``,
``fewest_calls`` ~ ``fewestcalls``, ``round_robin`` ~ ``rrmemory`` / ``round-robin``), the
service-level threshold (``servicelevel``), the wrap-up time (``wrapuptime``), the position
announcement interval (``announce-frequency``) and escalation (``also``: seats of another skill may
take the waiting call too, it keeps its place; ``priority``: the call moves up).  Every problem
is reported at once, each with its line, like ``handoff122 check-flow``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from routing.acd import Escalation, SkillPolicy
from routing.skills import SKILLS
from routing.strategy import STRATEGIES

FIELDS = ("strategy", "sl_threshold_s", "wrap_up_s", "announce_every_s", "escalate")
PRIORITY_MIN, PRIORITY_MAX = 1, 9


@dataclass(frozen=True, slots=True)
class QueueProblem:
    where: str            # queues.<skill>.<field>
    message: str
    line: int | None = None

    def __str__(self) -> str:
        at = f"line {self.line}: " if self.line else ""
        return f"{at}{self.where}: {self.message}"


class QueuesInvalid(Exception):
    def __init__(self, problems: list[QueueProblem], source: str) -> None:
        super().__init__(f"{source}: " + "; ".join(str(p) for p in problems))
        self.problems = problems
        self.source = source


def _lines(node: yaml.Node | None, path: tuple[Any, ...] = (), out: dict[tuple[Any, ...], int] | None = None
           ) -> dict[tuple[Any, ...], int]:
    """Every mapping key / sequence item of a composed YAML document -> its 1-based line."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = (*path, k.value)
            out[key] = k.start_mark.line + 1
            _lines(v, key, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out[(*path, i)] = v.start_mark.line + 1
            _lines(v, (*path, i), out)
    return out


def load_queues(path: str | Path, defaults: SkillPolicy) -> dict[str, SkillPolicy]:
    """The queues of a seats file (none: ``{}``); ``defaults`` fills what a queue does not say."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        lines = _lines(yaml.compose(text))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise QueuesInvalid([QueueProblem("file", "not valid YAML", mark.line + 1 if mark else None)],
                            str(path)) from e
    return parse_queues(data, defaults, str(path), lines)


def _number(value: Any, where: str, line: int | None, problems: list[QueueProblem], *, positive: bool = False
            ) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (positive and value == 0):
        problems.append(QueueProblem(where, f"{value!r} must be a number of seconds {'> 0' if positive else '>= 0'}",
                                     line))
        return None
    return float(value)


def parse_queues(data: Any, defaults: SkillPolicy, source: str = "seats file",
                 lines: dict[tuple[Any, ...], int] | None = None) -> dict[str, SkillPolicy]:
    lines = lines or {}
    if not isinstance(data, dict) or data.get("queues") is None:
        return {}
    raw = data["queues"]
    problems: list[QueueProblem] = []
    if not isinstance(raw, dict):
        raise QueuesInvalid([QueueProblem("queues", "must map skill -> queue settings", lines.get(("queues",)))],
                            source)
    policies: dict[str, SkillPolicy] = {}
    for skill, conf in raw.items():
        base = ("queues", skill)
        where = f"queues.{skill}"
        if skill not in SKILLS:
            problems.append(QueueProblem(where, f"unknown skill {skill!r}", lines.get(base)))
            continue
        if not isinstance(conf, dict):
            problems.append(QueueProblem(where, "must be a mapping of " + ", ".join(FIELDS), lines.get(base)))
            continue
        for unknown in sorted(set(conf) - set(FIELDS)):
            problems.append(QueueProblem(f"{where}.{unknown}", "unknown field (known: " + ", ".join(FIELDS) + ")",
                                         lines.get((*base, unknown))))
        fields: dict[str, Any] = {}
        if "strategy" in conf:
            if conf["strategy"] not in STRATEGIES:
                problems.append(QueueProblem(f"{where}.strategy", f"{conf['strategy']!r} must be one of "
                                             + ", ".join(STRATEGIES), lines.get((*base, "strategy"))))
            else:
                fields["strategy"] = conf["strategy"]
        for name, positive in (("sl_threshold_s", True), ("wrap_up_s", False), ("announce_every_s", True)):
            if name in conf:
                v = _number(conf[name], f"{where}.{name}", lines.get((*base, name)), problems, positive=positive)
                if v is not None:
                    fields[name] = v
        if "escalate" in conf:
            fields["escalate"] = _rules(conf["escalate"], skill, (*base, "escalate"), lines, problems)
        policies[skill] = replace(defaults, **fields)
    if problems:
        raise QueuesInvalid(problems, source)
    return policies


def _rules(raw: Any, skill: str, base: tuple[Any, ...], lines: dict[tuple[Any, ...], int],
           problems: list[QueueProblem]) -> tuple[Escalation, ...]:
    where = f"queues.{skill}.escalate"
    if not isinstance(raw, list):
        problems.append(QueueProblem(where, "must be a list of {after_s, also} or {after_s, priority}", lines.get(base)))
        return ()
    rules: list[Escalation] = []
    for i, rule in enumerate(raw):
        at = f"{where}[{i}]"
        line = lines.get((*base, i))
        if not isinstance(rule, dict) or set(rule) - {"after_s", "also", "priority"} or "after_s" not in rule \
                or ("also" in rule) == ("priority" in rule):
            problems.append(QueueProblem(at, "must be {after_s: N, also: skill} or {after_s: N, priority: P}", line))
            continue
        after = _number(rule["after_s"], f"{at}.after_s", line, problems)
        also, priority = rule.get("also"), rule.get("priority")
        if also is not None and (also not in SKILLS or also == skill):
            problems.append(QueueProblem(f"{at}.also", f"{also!r} must be another known skill", line))
            continue
        if "priority" in rule and (isinstance(priority, bool) or not isinstance(priority, int)
                                   or not PRIORITY_MIN <= priority <= PRIORITY_MAX):
            problems.append(QueueProblem(f"{at}.priority", f"{priority!r} must be an integer "
                                         f"{PRIORITY_MIN}..{PRIORITY_MAX} (1 = most urgent)", line))
            continue
        if after is not None:
            rules.append(Escalation(after_s=after, also=also, priority=priority))
    if [r.after_s for r in rules] != sorted(r.after_s for r in rules):
        problems.append(QueueProblem(where, "rules must be in order of after_s", lines.get(base)))
    return tuple(rules)
