"""Installing a new IVR flow while the node runs: validate, swap, keep a copy (no restart).

Calls already in the IVR keep the flow they started with; ``on_installed`` decides what new calls
use.  A flow with any problem is never installed nor written, so a typo in an upload cannot take
the IVR down.  Relative ``prompts_dir`` entries resolve against ``base_dir`` (the directory of the
flow file the node started with), as they would in that file.

An upload is untrusted text, and the control loop that runs the IVR and the ACD must never wait
on it.  So it is read and checked on a thread of its own, within ``parse_timeout_s``, by a YAML
loader that refuses anchors and aliases: a few hundred bytes of nested aliases (a "billion
laughs") would otherwise expand into a structure that any walk over it never finishes.  Without
aliases, reading is linear in the size, which the API already caps (``api_max_flow_bytes``).
Only the swap itself (saving the file, ``on_installed``) runs on the caller's loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UploadProblem:
    location: str
    message: str


class UploadLoader(yaml.SafeLoader):
    """A safe loader that refuses anchors and aliases (a flow file never needs them)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (&name, *name) are not allowed in an uploaded flow",
                event.start_mark)
        return super().compose_node(parent, index)


def _where(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "document"


def read_upload(yaml_text: str, base_dir: Path) -> Any:
    """The built ``Flow``, or the list of its problems.  Runs off the control loop."""
    from ivr.check import validate_flow
    from ivr.loader import flow_from_data

    try:
        data = yaml.load(yaml_text, Loader=UploadLoader)  # a SafeLoader subclass: no object tags
    except yaml.YAMLError as e:
        return [UploadProblem(_where(e), f"not valid YAML: {getattr(e, 'problem', None) or e}")]
    except RecursionError:
        return [UploadProblem("document", "nested too deeply")]
    if not isinstance(data, dict):
        return [UploadProblem("document", "a flow must be a YAML mapping")]
    problems = list(validate_flow(data, base_dir))
    if problems:
        return problems
    return flow_from_data(data, base_dir, source="upload")


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".flow-", suffix=".yaml")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


class FlowFileAdmin:
    """``ApiContext.flow_admin``: validates with ``ivr.check``, builds with ``ivr.flow``.

    ``save_to``: where an installed flow is written (the operator's ``--flow`` file, so a restart
    keeps it); None keeps it in memory only.  ``parse_timeout_s``: how long reading and checking an
    upload may take before it is refused.
    """

    def __init__(self, save_to: Path | None, on_installed: Callable[[Any], Any] | None = None,
                 base_dir: Path | None = None, parse_timeout_s: float = 2.0) -> None:
        self.save_to = Path(save_to) if save_to is not None else None
        self.base_dir = Path(base_dir) if base_dir is not None else (
            self.save_to.parent if self.save_to is not None else Path.cwd())
        self.on_installed = on_installed
        self.parse_timeout_s = parse_timeout_s
        # One reader thread: uploads are rare, and an upload that ran out of time cannot pile up
        # threads (a thread cannot be stopped; the next upload waits for it and times out too).
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flow-upload")

    async def install_flow(self, yaml_text: str) -> list[Any]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.parse_timeout_s):
                outcome = await loop.run_in_executor(self._reader, read_upload, yaml_text, self.base_dir)
        except TimeoutError:
            log.warning("ivr_flow_upload_too_slow", extra={"limit_s": self.parse_timeout_s, "bytes": len(yaml_text)})
            return [UploadProblem("document", f"reading it took longer than {self.parse_timeout_s:g} s; refused")]
        if isinstance(outcome, list):
            return outcome
        if self.save_to is not None:
            _write_atomically(self.save_to, yaml_text)
        if self.on_installed is not None:
            result = self.on_installed(outcome)
            if inspect.isawaitable(result):
                await result
        log.info("ivr_flow_installed", extra={"saved_to": str(self.save_to) if self.save_to else None})
        return []
