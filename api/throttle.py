"""Slowing down whoever keeps presenting bad tokens: a sliding window per client address.

After ``max_failures`` unknown, expired or revoked tokens from one address within ``window_s``,
that address gets 429 (with ``Retry-After``) for any token the API does not already know to be
good, until its oldest failure leaves the window.  Guessing tokens from one address then costs
minutes per handful, and each refused guess costs the node no database lookup.

Memory is bounded: at most ``max_failures`` timestamps per address and ``max_sources`` addresses
(the least recently failing are forgotten first).  Used from the API's event loop only.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable


class BadTokenThrottle:
    def __init__(self, max_failures: int, window_s: float, max_sources: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_sources = max_sources
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, source: str) -> float | None:
        """Seconds until ``source`` may try a token again; None when it may now."""
        times = self._failures.get(source)
        if times is None:
            return None
        now = self.clock()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[source]
            return None
        if len(times) < self.max_failures:
            return None
        return times[0] + self.window_s - now

    def failed(self, source: str) -> None:
        times = self._failures.get(source)
        if times is None:
            times = self._failures[source] = deque(maxlen=self.max_failures)
        self._failures.move_to_end(source)
        times.append(self.clock())
        while len(self._failures) > self.max_sources:
            self._failures.popitem(last=False)
