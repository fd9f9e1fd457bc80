"""The TwiML documents the ingress answers with, built with the ``twilio`` library (never by hand).

A Twilio caller hears the same Mandarin WAV files as a SIP caller, fetched from
``/twilio/prompts/<id>.wav``; when a WAV is missing the prompt's text is spoken by ``<Say
language="zh-CN">`` so a caller is never left in silence by a missing file.
"""

from __future__ import annotations

import math
import urllib.parse
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml
from twilio.twiml.voice_response import Dial, Gather, VoiceResponse

from ivr.flow import DEFAULT_PROMPTS_DIR, Flow

SHIPPED_TEXTS = DEFAULT_PROMPTS_DIR.parent / "texts.yaml"
#: Speaking rate assumed for a prompt with no WAV (Mandarin TTS, seconds per character).
SAY_SECONDS_PER_CHAR = 0.25


@lru_cache(maxsize=1)
def shipped_texts() -> dict[str, str]:
    """Texts of the shipped prompts (hold, queue position, transfer), for the ``<Say>`` fallback."""
    try:
        data = yaml.safe_load(SHIPPED_TEXTS.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return {str(k): str(v) for k, v in data.items()}


@lru_cache(maxsize=512)
def wav_seconds(path: Path) -> float | None:
    """How long a prompt plays; None when the file is missing or unreadable (then it is spoken)."""
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / float(w.getframerate())
    except (OSError, EOFError, wave.Error):
        return None


@dataclass(frozen=True, slots=True)
class Prompt:
    """One prompt as the caller hears it: a WAV to play, or a text to speak when there is none."""

    id: str
    path: Path
    text: str

    @property
    def seconds(self) -> float:
        played = wav_seconds(self.path)
        return played if played is not None else len(self.text) * SAY_SECONDS_PER_CHAR


def flow_texts(flow: Flow) -> dict[str, str]:
    texts = dict(shipped_texts())
    texts[flow.invalid_prompt.id] = flow.invalid_prompt.text
    texts.update({n.prompt.id: n.prompt.text for n in flow.nodes.values()})
    return texts


def shipped_prompt(prompt_id: str) -> Prompt:
    return Prompt(prompt_id, DEFAULT_PROMPTS_DIR / f"{prompt_id}.wav", shipped_texts().get(prompt_id, ""))


def queue_position_ids(position: int, max_spoken: int = 20) -> list[str]:
    """The prompt ids of ``ivr.prompts.queue_position_prompts`` (same phrases, as ids for URLs)."""
    if position <= 1:
        return ["queue_next"]
    ahead = position - 1
    if ahead > max_spoken:
        return ["queue_many"]
    return ["queue_ahead", f"n{ahead}", "queue_people"]


class TwimlBuilder:
    """Absolute URLs under the public base URL (correct behind a proxy) and the documents."""

    def __init__(self, public_base_url: str) -> None:
        self.base = public_base_url.rstrip("/")

    def url(self, path: str, query: Mapping[str, str | int] | None = None) -> str:
        q = f"?{urllib.parse.urlencode(query)}" if query else ""
        return f"{self.base}/twilio/{path}{q}"

    def _say_or_play(self, verb: VoiceResponse | Gather, prompt: Prompt) -> None:
        if prompt.path.is_file():
            verb.play(self.url(f"prompts/{prompt.id}.wav"))
        elif prompt.text:
            verb.say(prompt.text, language="zh-CN")

    def gather(self, prompts: Sequence[Prompt], timeout_s: float, step: int,
               before: Sequence[Prompt] = ()) -> str:
        """One IVR question: its prompts inside a one-key ``<Gather>`` that reports silence too.

        ``finishOnKey=""`` makes ``#`` an ordinary key, as on SIP (the flow decides what it means).
        """
        vr = VoiceResponse()
        for p in before:
            self._say_or_play(vr, p)
        g = vr.gather(input="dtmf", num_digits=1, timeout=max(1, math.ceil(timeout_s)), finish_on_key="",
                      action=self.url("gather", {"step": step}), method="POST", action_on_empty_result=True)
        for p in prompts:
            self._say_or_play(g, p)
        return str(vr)

    def hold(self, prompts: Sequence[Prompt], step: int) -> str:
        """One hold segment, then come back: the next poll may find a seat reserved for the caller."""
        vr = VoiceResponse()
        for p in prompts:
            self._say_or_play(vr, p)
        vr.redirect(self.url("hold", {"step": step}), method="POST")
        return str(vr)

    def dial(self, contact: str, call_id: str, skill: str, seat_id: str, ring_s: int, step: int,
             before: Sequence[Prompt] = ()) -> str:
        """Bridge the caller to the reserved seat; the seat's phone sees the same headers as from SIP."""
        vr = VoiceResponse()
        for p in before:
            self._say_or_play(vr, p)
        query = {"step": step, "seat": seat_id}
        d: Dial = vr.dial(answer_on_bridge=True, timeout=ring_s, action=self.url("dial-status", query),
                          method="POST")
        d.sip(sip_uri_with_headers(contact, {"X-Handoff-Call-Id": call_id, "X-Handoff-Skill": skill}),
              status_callback_event="answered", status_callback=self.url("seat-status", query),
              status_callback_method="POST")
        return str(vr)

    @staticmethod
    def hangup() -> str:
        vr = VoiceResponse()
        vr.hangup()
        return str(vr)

    @staticmethod
    def empty() -> str:
        return str(VoiceResponse())


def sip_uri_with_headers(contact: str, headers: Mapping[str, str]) -> str:
    """Custom SIP headers ride on the URI (Twilio ``<Sip>``: ``sip:user@host?X-Name=value``)."""
    uri = contact.strip()
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1]
    sep = "&" if "?" in uri else "?"
    return uri + sep + urllib.parse.urlencode(headers)
