"""A scripted caller for interpreter tests: plays the media side (prompts end, timers fire)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ivr.flow import Flow
from ivr.interpreter import Action, IvrSession, Play, Route, StartTimer


@dataclass
class ScriptedCaller:
    """Feeds a session the events of a script and keeps the live prompt/timer tokens like a gateway.

    Script words: a keypad key is pressed at once (barge-in if a prompt is playing); `F` lets the
    current prompt finish; `T` lets every queued prompt finish and then the no-input timer fire.
    """

    session: IvrSession
    now: float = 0.0
    play_token: int | None = None
    timer_token: int | None = None
    actions: list[Action] = field(default_factory=list)
    steps: list[list[Action]] = field(default_factory=list)

    @classmethod
    def calling(cls, flow: Flow, call_id: str = "call-1") -> ScriptedCaller:
        caller = cls(IvrSession(flow, call_id))
        caller._take(caller.session.start(caller.now))
        return caller

    def _take(self, actions: list[Action]) -> list[Action]:
        self.steps.append(actions)
        self.actions.extend(actions)
        for a in actions:
            if isinstance(a, Play):
                self.play_token, self.timer_token = a.token, None
            elif isinstance(a, StartTimer):
                self.play_token, self.timer_token = None, a.token
        return actions

    def finish_prompt(self) -> list[Action]:
        self.now += 1.0
        assert self.play_token is not None, "no prompt is playing"
        return self._take(self.session.prompt_finished(self.play_token, self.now))

    def silence(self) -> list[Action]:
        while self.timer_token is None and not self.session.done:
            self.finish_prompt()
        if self.session.done:
            return []
        self.now += 6.0
        return self._take(self.session.timeout(self.timer_token, self.now))

    def press(self, key: str) -> list[Action]:
        self.now += 0.5
        return self._take(self.session.digit(key, self.now))

    def run(self, script: str) -> ScriptedCaller:
        for word in script.split():
            if word == "F":
                self.finish_prompt()
            elif word == "T":
                self.silence()
            else:
                self.press(word)
        return self

    @property
    def routes(self) -> list[Route]:
        return [a for a in self.actions if isinstance(a, Route)]

    @property
    def played(self) -> list[str]:
        return [a.prompt_id for a in self.actions if isinstance(a, Play)]
