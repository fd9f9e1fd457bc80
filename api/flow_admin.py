"""Installing a new IVR flow while the node runs: validate, write, swap (no restart).

Calls already in the IVR keep the flow they started with; the node's ``on_installed`` callback
decides what new calls use.  A flow with any problem is never written, so a typo in an upload
cannot take the IVR down.
"""

from __future__ import annotations

import inspect
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UploadProblem:
    location: str
    message: str


class FlowFileAdmin:
    """``ApiContext.flow_admin`` backed by the flow file the node was started with."""

    def __init__(self, flow_path: Path, on_installed: Callable[[Any], Any] | None = None,
                 base_dir: Path | None = None) -> None:
        self.flow_path = Path(flow_path)
        self.base_dir = Path(base_dir) if base_dir is not None else self.flow_path.parent
        self.on_installed = on_installed

    async def install_flow(self, yaml_text: str) -> list[Any]:
        from ivr.check import validate_flow
        from ivr.flow import load_flow

        try:
            data = yaml.safe_load(yaml_text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "document"
            return [UploadProblem(where, f"not valid YAML: {getattr(e, 'problem', None) or e}")]
        if not isinstance(data, dict):
            return [UploadProblem("document", "a flow must be a YAML mapping")]
        problems = list(validate_flow(data, self.base_dir))
        if problems:
            return problems
        self.flow_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.flow_path.parent, prefix=".flow-", suffix=".yaml")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(yaml_text)
        os.replace(tmp, self.flow_path)
        flow = load_flow(self.flow_path)
        if self.on_installed is not None:
            result = self.on_installed(flow)
            if inspect.isawaitable(result):
                await result
        log.info("ivr flow installed", extra={"flow_path": str(self.flow_path)})
        return []
