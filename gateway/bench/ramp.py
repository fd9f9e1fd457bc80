"""Find a limit instead of confirming a rate: raise the call rate step by step until a step fails.

A step offers calls at one rate for long enough to be steady.  It is clean when fewer than 0.1 %
of its calls failed and the set-up time (INVITE -> 200 OK) p99 stayed within 1 s, plus whatever
the benchmark adds (audio quality, lost calls).  The ramp doubles the rate until a step fails
(or a cap is reached), then halves the gap between the last clean and the first failing rate a
few times: the limit is the highest clean rate, found in a handful of steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.bench.runner import say

MAX_FAILED_PCT = 0.1
MAX_SETUP_P99_MS = 1000.0


def pct(values: list[float], q: float) -> float | None:
    """The q-quantile by nearest rank (None for no values)."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def rounded(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


@dataclass
class Step:
    """One rate held for a while: what was offered, what failed, how fast calls were set up."""

    target_cps: float
    seconds: float
    ok: int
    failed: int
    achieved_cps: float
    setup_ms: list[float] = field(default_factory=list, repr=False)
    #: more reasons to call the step failing (lost calls, audio) beyond failures and set-up time
    problems: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed_pct(self) -> float:
        return 100.0 * self.failed / max(1, self.ok + self.failed)

    @property
    def setup_p99_ms(self) -> float | None:
        return pct(self.setup_ms, 0.99)

    def why_failing(self) -> list[str]:
        out = list(self.problems)
        if self.ok + self.failed == 0:
            out.append("no calls completed")
        if self.failed_pct > MAX_FAILED_PCT:
            out.append(f"failed {self.failed_pct:.2f} % > {MAX_FAILED_PCT} %")
        p99 = self.setup_p99_ms
        if p99 is not None and p99 > MAX_SETUP_P99_MS:
            out.append(f"set-up p99 {p99:.0f} ms > {MAX_SETUP_P99_MS:.0f} ms")
        if self.achieved_cps and self.achieved_cps < 0.9 * self.target_cps:
            out.append(f"only {self.achieved_cps:.1f} calls/s offered of {self.target_cps:g} (generator behind)")
        return out

    @property
    def clean(self) -> bool:
        return not self.why_failing()

    def to_dict(self) -> dict[str, Any]:
        return {"target_cps": self.target_cps, "seconds": self.seconds, "ok": self.ok, "failed": self.failed,
                "failed_pct": round(self.failed_pct, 3), "achieved_cps": round(self.achieved_cps, 2),
                "setup_ms_p50": rounded(pct(self.setup_ms, 0.5)), "setup_ms_p99": rounded(self.setup_p99_ms),
                "setup_ms_max": rounded(max(self.setup_ms, default=None) if self.setup_ms else None),
                "clean": self.clean, "why_failing": self.why_failing(), **self.extra}


def what_limits(steps: list[Step], best: float, cap: float, cap_reason: str) -> str:
    """Why the ramp stopped where it did: the cap, or what failed at the lowest failing rate."""
    failing = sorted((s for s in steps if not s.clean), key=lambda s: s.target_cps)
    if failing:
        return f"at {failing[0].target_cps:g} calls/s: " + "; ".join(failing[0].why_failing())
    if best >= cap:
        return f"not reached: the ramp stopped at its cap ({cap:g} calls/s, {cap_reason})"
    return "unknown"


def find_limit(run_step: Callable[[float], Step], *, first: float, cap: float, refine: int = 2,
               resolution: float = 1.0, label: str = "") -> tuple[list[Step], float]:
    """Run steps from ``first``, doubling until one fails or ``cap`` is reached, then bisect
    ``refine`` times.  Returns every step (in the order run) and the highest clean rate (0 if none)."""
    steps: list[Step] = []
    best, worst = 0.0, None  # highest clean rate, lowest failing rate
    rate = first

    def run(r: float) -> Step:
        nonlocal best, worst
        say(f"{label}step {len(steps) + 1}: {r:g} calls/s")
        step = run_step(r)
        steps.append(step)
        why = step.why_failing()
        p99 = step.setup_p99_ms
        say(f"{label}  {r:g} calls/s: {step.ok} ok, {step.failed} failed ({step.failed_pct:.2f} %), set-up p99 "
            f"{'-' if p99 is None else f'{p99:.0f}'} ms -> {'clean' if not why else 'FAILING: ' + '; '.join(why)}")
        if not why:
            best = max(best, r)
        else:
            worst = r if worst is None else min(worst, r)
        return step

    while True:
        step = run(rate)
        if not step.clean or rate >= cap:
            break
        rate = min(cap, rate * 2)
    for _ in range(refine):
        if worst is None or worst - best <= resolution:
            break
        mid = best + (worst - best) / 2
        mid = max(best + resolution, round(mid / resolution) * resolution)
        if mid >= worst:
            break
        run(mid)
    return steps, best
