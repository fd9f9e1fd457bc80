"""The first screen of ``handoff122 serve`` on a terminal: what is running, where, how to sign in.

A person who just started a node needs five facts before any log line: where SIP listens and
which numbers it answers, where the dashboard and the seat console are, where the data lives,
how to sign in, and, on a node without seats, how to get a first call to reach someone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Where the shipped example seats file lives (README shows it).
EXAMPLE_SEATS = Path(__file__).resolve().parent.parent / "examples" / "seats.yaml"


@dataclass(frozen=True)
class NodeFacts:
    sip_host: str
    sip_port: int
    service_numbers: list[str]
    front_door: str               # "kamailio" or "none"
    capacity: int                 # callers at once
    api_url: str | None
    data_dir: Path
    database: str                 # URL with any password masked
    seats: int
    signin_url: str | None
    token_command: str


def no_seats_hint() -> str:
    """One line for a node that has no seat: a newcomer's call would otherwise wait for ever."""
    example = EXAMPLE_SEATS if EXAMPLE_SEATS.exists() else Path("examples/seats.yaml")
    return (f"no seats configured: callers will wait in the queue. Add seats with --seats FILE "
            f"(example: {example}) or the admin API, or run `handoff122 demo` to watch the whole flow "
            f"with simulated seats and callers")


def render_banner(f: NodeFacts) -> str:
    sip = f"sip:{'|'.join(f.service_numbers)}@{f.sip_host}:{f.sip_port}"
    door = "through Kamailio" if f.front_door == "kamailio" else "one media worker, no Kamailio"
    rows: list[tuple[str, str]] = [("SIP", f"{sip}  (UDP+TCP, {door}, {f.capacity} callers at once)")]
    if f.api_url:
        rows += [("dashboard", f"{f.api_url}/"), ("seat console", f"{f.api_url}/seat"),
                 ("API", f"{f.api_url}/docs")]
    rows += [("data", f"{f.data_dir}  (database {f.database})")]
    if f.signin_url:
        rows += [("sign in", f"{f.signin_url}"), ("", "(a one-time link: it signs in one browser as supervisor)")]
    else:
        rows += [("sign in", f"with a token: {f.token_command}")]
    rows += [("seats", str(f.seats) if f.seats else no_seats_hint())]
    width = max(len(k) for k, _ in rows)
    lines = ["", "  handoff122 · 122 call-handoff gateway is running", ""]
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    lines += ["", "  Ctrl-C stops the node (calls in progress are ended and recorded).", ""]
    return "\n".join(lines)
