"""The shipped Mandarin prompts that are not part of a flow: hold message and queue position.

While no seat is free the caller must keep hearing that they are not forgotten (DOMAIN.md: never
dropped, keeps their place), so the gateway plays these between waits.
"""

from __future__ import annotations

from pathlib import Path

from ivr.flow import DEFAULT_PROMPTS_DIR

#: Queue positions said as a number ("您前面还有 N 位来电"); beyond this, one "many callers" phrase.
MAX_SPOKEN_AHEAD = 20


def prompt_path(prompt_id: str) -> Path:
    """The WAV of a shipped prompt; raises FileNotFoundError so a missing file shows at start-up."""
    path = DEFAULT_PROMPTS_DIR / f"{prompt_id}.wav"
    if not path.is_file():
        raise FileNotFoundError(f"no prompt audio for '{prompt_id}': {path}")
    return path


def hold_prompts() -> list[Path]:
    """'Please do not hang up, we are connecting you to a specialist seat.'"""
    return [prompt_path("hold")]


def transfer_prompts() -> list[Path]:
    """'Connecting you to a person', for the moment the IVR has decided."""
    return [prompt_path("transfer_human")]


def queue_position_prompts(position: int) -> list[Path]:
    """What to say to the caller at `position` in the queue (1 = next to be served)."""
    if position < 1:
        raise ValueError(f"queue position starts at 1, got {position}")
    if position == 1:
        return [prompt_path("queue_next")]
    ahead = position - 1
    if ahead > MAX_SPOKEN_AHEAD:
        return [prompt_path("queue_many")]
    return [prompt_path("queue_ahead"), prompt_path(f"n{ahead}"), prompt_path("queue_people")]
