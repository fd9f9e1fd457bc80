"""``handoff122``: the operator's command line (names fixed by CONTRACT.md).

Each sub-command imports its implementation lazily so that, e.g., ``check-flow`` works on a
machine without a SIP stack and ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway.settings import ConfigError


def _serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML/JSON settings file")
    p.add_argument("--sip-host")
    p.add_argument("--sip-port", type=int)
    p.add_argument("--api-host")
    p.add_argument("--api-port", type=int)
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--db-url")
    p.add_argument("--mqtt-url")
    p.add_argument("--seats", type=Path)
    p.add_argument("--flow", type=Path)
    p.add_argument("--workers", type=int)
    p.add_argument("--worker-callers", type=int)
    p.add_argument("--ring-timeout", type=float)
    p.add_argument("--service-numbers", help="comma-separated, default 122")
    p.add_argument("--kamailio", help="auto | off | path to the kamailio binary")
    p.add_argument("--log-level")


_SERVE_KEYS = [
    "config", "sip_host", "sip_port", "api_host", "api_port", "data_dir", "db_url", "mqtt_url", "seats",
    "flow", "workers", "worker_callers", "ring_timeout", "service_numbers", "kamailio", "log_level",
]


def _settings_from(args: argparse.Namespace):
    from gateway.settings import load_settings

    return load_settings({k: getattr(args, k, None) for k in _SERVE_KEYS})


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.node import run_node

    return run_node(_settings_from(args))


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(_settings_from(args), callers=args.callers)


def cmd_cluster(args: argparse.Namespace) -> int:
    # Several nodes may share PostgreSQL and MQTT, but each node's ACD decides alone: without one
    # routing authority for the shared seats, two nodes could offer one seat two calls.  Refuse
    # clearly rather than start something that breaks "a seat is never offered two calls".
    print("handoff122 cluster: not available yet: nodes need one routing authority for shared seats "
          "(run one node per set of seats with handoff122 serve meanwhile)", file=sys.stderr)
    return 2


def cmd_seat(args: argparse.Namespace) -> int:
    from gateway.simulators.seat import run_seat

    answer_after = None if args.answer_after == "never" else float(args.answer_after)
    return run_seat(seat_id=args.id, sip_port=args.sip_port, answer_after=answer_after,
                    hangup_after=args.hangup_after, record=args.record, tone_hz=args.tone,
                    respond=args.respond, max_calls=args.max_calls)


def cmd_call(args: argparse.Namespace) -> int:
    from gateway.simulators.caller import run_caller

    return run_caller(to=args.to, digits=args.digits, gap=args.gap, stay=args.stay, dtmf=args.dtmf,
                      tone_hz=args.tone, record=args.record, first_digit_after=args.first_digit_after,
                      local_port=args.local_port, hangup_at=args.hangup_at)


def cmd_check_flow(args: argparse.Namespace) -> int:
    from ivr.check import check_flow_main

    return check_flow_main(args.file)


def cmd_token(args: argparse.Namespace) -> int:
    from api.tokens import create_token_main

    return create_token_main(role=args.role, seat_id=args.seat, data_dir=args.data_dir, db_url=args.db_url)


def cmd_recordings(args: argparse.Namespace) -> int:
    from recordings.cli import recordings_main

    return recordings_main(action=args.action, data_dir=args.data_dir, db_url=args.db_url, days=args.days)


_BENCHES: dict[str, tuple[str, str]] = {
    "sip": ("gateway.bench.sip", "main"),
    "handoff": ("gateway.bench.handoff", "main"),
    "ivr": ("ivr.bench", "main"),
    "routing": ("routing.bench", "main"),
    "api": ("gateway.bench.api", "main"),
    "faults": ("gateway.bench.faults", "main"),
}


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    module, fn = _BENCHES[args.what]
    run: Callable[..., int] = getattr(importlib.import_module(module), fn)
    return run(as_json=args.json, quick=args.quick)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="handoff122", description="122 call-handoff gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run one node: SIP gateway + IVR + routing + API + recordings")
    _serve_options(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="a node + one simulated seat per skill + a stream of simulated callers")
    _serve_options(p)
    p.add_argument("--callers", type=int, default=0, help="stop after this many callers (0 = until Ctrl-C)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("cluster", help="Kamailio in front of N nodes sharing PostgreSQL and MQTT")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--sip-port", type=int, default=5060)
    p.add_argument("--api-port", type=int, default=8000)
    p.add_argument("--data-dir", type=Path, default=Path("./var/cluster"))
    p.add_argument("--db-url")
    p.add_argument("--mqtt-url")
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser("seat", help="a simulated seat phone (pjsua2)")
    p.add_argument("--id", required=True)
    p.add_argument("--sip-port", type=int, required=True)
    p.add_argument("--answer-after", default="0.5", help="seconds, or 'never'")
    p.add_argument("--hangup-after", type=float, default=None)
    p.add_argument("--record", type=Path)
    p.add_argument("--tone", type=float, default=1000.0)
    p.add_argument("--respond", type=int, default=None, help="answer every INVITE with this final code (486, 603…)")
    p.add_argument("--max-calls", type=int, default=0, help="exit after this many calls (0 = run until killed)")
    p.set_defaults(func=cmd_seat)

    p = sub.add_parser("call", help="a simulated caller (pjsua2)")
    p.add_argument("--to", required=True, help="SIP URI, e.g. sip:122@127.0.0.1:5060")
    p.add_argument("--digits", default="")
    p.add_argument("--gap", type=float, default=1.0)
    p.add_argument("--first-digit-after", type=float, default=0.5)
    p.add_argument("--stay", type=float, default=5.0)
    p.add_argument("--hangup-at", type=float, default=None, help="hang up this many seconds after answer")
    p.add_argument("--dtmf", choices=["rfc4733", "info"], default="rfc4733")
    p.add_argument("--tone", type=float, default=440.0)
    p.add_argument("--record", type=Path)
    p.add_argument("--local-port", type=int, default=0)
    p.set_defaults(func=cmd_call)

    p = sub.add_parser("check-flow", help="validate an IVR flow file")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_check_flow)

    p = sub.add_parser("token", help="API tokens")
    tsub = p.add_subparsers(dest="token_cmd", required=True)
    t = tsub.add_parser("create", help="print a new API token (stored hashed)")
    t.add_argument("--role", choices=["supervisor", "seat", "admin"], required=True)
    t.add_argument("--seat")
    t.add_argument("--data-dir", type=Path, default=Path("./var"))
    t.add_argument("--db-url")
    t.set_defaults(func=cmd_token)

    p = sub.add_parser("recordings", help="recordings integrity and retention")
    p.add_argument("action", choices=["verify", "purge"])
    p.add_argument("--data-dir", type=Path, default=Path("./var"))
    p.add_argument("--db-url")
    p.add_argument("--days", type=int, default=None, help="retention for purge (default from settings)")
    p.set_defaults(func=cmd_recordings)

    p = sub.add_parser("bench", help="benchmarks; print their figures")
    p.add_argument("what", choices=sorted(_BENCHES))
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--quick", action="store_true", help="a smaller run (smoke test)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"handoff122: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
