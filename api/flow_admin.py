"""Installing a new IVR flow while the node runs: validate, swap, keep a copy (no restart).

Calls already in the IVR keep the flow they started with; ``on_installed`` decides what new calls
use.  A flow with any problem is never installed nor written, so a typo in an upload cannot take
the IVR down.  Relative ``prompts_dir`` entries resolve against ``base_dir`` (the directory of the
flow file the node started with), as they would in that file.
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


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".flow-", suffix=".yaml")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


class FlowFileAdmin:
    """``ApiContext.flow_admin``: validates with ``ivr.check``, builds with ``ivr.flow``.

    ``save_to``: where an installed flow is written (the operator's ``--flow`` file, so a restart
    keeps it); None keeps it in memory only.
    """

    def __init__(self, save_to: Path | None, on_installed: Callable[[Any], Any] | None = None,
                 base_dir: Path | None = None) -> None:
        self.save_to = Path(save_to) if save_to is not None else None
        self.base_dir = Path(base_dir) if base_dir is not None else (
            self.save_to.parent if self.save_to is not None else Path.cwd())
        self.on_installed = on_installed

    async def install_flow(self, yaml_text: str) -> list[Any]:
        from ivr.check import validate_flow
        from ivr.loader import flow_from_data

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
        flow = flow_from_data(data, self.base_dir, source="upload")
        if self.save_to is not None:
            _write_atomically(self.save_to, yaml_text)
        if self.on_installed is not None:
            result = self.on_installed(flow)
            if inspect.isawaitable(result):
                await result
        log.info("ivr_flow_installed", extra={"saved_to": str(self.save_to) if self.save_to else None})
        return []
