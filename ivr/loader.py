"""Reading a flow file into a ``Flow``: parse, validate (``ivr.check``), build.

Apart from ``ivr.flow`` (the schema) because the checker builds on the schema and the loader on
the checker: flow <- check <- loader, no cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ivr.check import validate_flow
from ivr.flow import Flow, FlowInvalid, FlowProblem, resolve_prompts_dir
from ivr.source import YamlSyntaxError, parse_located


def flow_from_data(data: Any, base_dir: Path, source: str = "flow") -> Flow:
    """Validate parsed flow data and build the `Flow`, or raise `FlowInvalid` with every problem."""
    problems = validate_flow(data, base_dir)
    if problems:
        raise FlowInvalid(problems, source)
    fields = dict(data)
    fields["prompts_dir"] = resolve_prompts_dir(fields.get("prompts_dir"), base_dir)
    return Flow.model_validate(fields)


def load_flow(path: str | Path) -> Flow:
    """Read and validate a flow file; a bad flow is refused as a whole (`FlowInvalid`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FlowInvalid([FlowProblem("file", f"cannot read: {e}")], str(path)) from e
    try:
        data = parse_located(text)
    except YamlSyntaxError as e:
        raise FlowInvalid([FlowProblem("file", str(e), e.line)], str(path)) from e
    return flow_from_data(data, path.resolve().parent, str(path))
