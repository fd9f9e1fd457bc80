"""The shipped Mandarin prompts that are not part of a flow: hold message and queue position.

While no seat is free the caller must keep hearing that they are not forgotten (DOMAIN.md: never
dropped, keeps their place), so the gateway plays these between waits.
"""

from __future__ import annotations

import wave
from pathlib import Path

from ivr.flow import DEFAULT_PROMPTS_DIR, Flow

#: Queue positions said as a number ("您前面还有 N 位来电"); beyond this, one "many callers" phrase.
MAX_SPOKEN_AHEAD = 20


#: The shipped prompts a waiting caller may hear (hold message, "connecting you", positions).
QUEUE_PROMPT_IDS = ("hold", "transfer_human", "queue_next", "queue_ahead", "queue_people", "queue_many",
                    *(f"n{i}" for i in range(1, MAX_SPOKEN_AHEAD + 1)))


def prompt_path(prompt_id: str) -> Path:
    """The WAV of a shipped prompt.  Its presence is checked once, at start-up
    (``missing_prompts``), never while a caller waits on it."""
    return DEFAULT_PROMPTS_DIR / f"{prompt_id}.wav"


def required_prompts(flow: Flow) -> list[Path]:
    """Every WAV a SIP caller may hear: the flow's prompts, then the queue's."""
    paths = [flow.wav_path(n.prompt.id) for n in flow.nodes.values()]
    paths.append(flow.wav_path(flow.invalid_prompt.id))
    paths += [prompt_path(p) for p in QUEUE_PROMPT_IDS]
    return list(dict.fromkeys(paths))


def missing_prompts(flow: Flow) -> list[str]:
    """The required prompts that are absent or not a readable WAV, each as ``path: why``.
    A node refuses to start on any (one missing prompt would leave a caller in silence)."""
    problems = []
    for path in required_prompts(flow):
        try:
            with wave.open(str(path), "rb") as w:
                if w.getnframes() == 0:
                    problems.append(f"{path}: empty")
        except FileNotFoundError:
            problems.append(f"{path}: missing")
        except (OSError, EOFError, wave.Error) as e:
            problems.append(f"{path}: not a readable WAV ({e})")
    return problems


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
