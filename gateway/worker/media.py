"""Prompt playback and call recording on the conference bridge (PJSIP thread only)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pjsua2 as pj


class PromptPlayer(pj.AudioMediaPlayer):
    """A one-shot playlist whose end is reported once, with the control process's token.

    The end-of-file callback runs inside PJSIP's media path: it only schedules the report, and
    the player is destroyed later from the loop (destroying it inside its own callback crashes).
    """

    def __init__(self, files: list[str], token: int, on_end: Callable[[int], None]) -> None:
        super().__init__()
        self.token = token
        self._on_end = on_end
        self._reported = False
        if len(files) == 1:
            self.createPlayer(files[0], pj.PJMEDIA_FILE_NO_LOOP)
        else:
            self.createPlaylist(pj.StringVector(files), "prompts", pj.PJMEDIA_FILE_NO_LOOP)

    def onEof2(self) -> None:
        if not self._reported:
            self._reported = True
            self._on_end(self.token)


class CallRecording:
    """The call's recorder: every party the caller hears, and the caller, mixed into one WAV."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.recorder = pj.AudioMediaRecorder()
        self.recorder.createRecorder(str(path))

    def feed(self, media: pj.AudioMedia) -> None:
        media.startTransmit(self.recorder)

    def close(self) -> None:
        """Release the recorder.  Since PJSIP 2.14 the conference removes a port on its next clock
        tick, so the WAV writer is destroyed (and writes its final header) about one frame later:
        use ``header_final`` before telling anyone the file is complete."""
        self.recorder = None  # type: ignore[assignment]

    def header_final(self) -> bool:
        """True once the WAV header declares the data actually on disk (the writer is gone)."""
        try:
            with self.path.open("rb") as f:
                head = f.read(44)
            size = self.path.stat().st_size
        except OSError:
            return True  # nothing to wait for
        if len(head) < 44:
            return False
        return int.from_bytes(head[40:44], "little") == size - 44
