"""``handoff122``: the operator's command line (names fixed by CONTRACT.md).

Each sub-command imports its implementation lazily so that, e.g., ``check-flow`` works on a
machine without a SIP stack and ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway.settings import ConfigError


def _flag_type(annotation: Any) -> tuple[Callable[[str], Any] | None, bool]:
    """argparse type for a settings field, and whether it is a list (given comma-separated)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if args and typing.get_origin(annotation) is not None else annotation
    if typing.get_origin(base) is typing.Annotated:
        base = typing.get_args(base)[0]
    if typing.get_origin(base) is list:
        return str, True
    return ({int: int, float: float, Path: Path}.get(base, str)), False


def _serve_options(p: argparse.ArgumentParser) -> None:
    """One flag per setting, generated from ``Settings`` so that help and settings never drift."""
    from gateway.settings import Settings

    for name, field in Settings.model_fields.items():
        kind, is_list = _flag_type(field.annotation)
        if field.default_factory is not None:
            default = "4 per core" if name == "workers" else ",".join(field.default_factory())  # type: ignore[call-arg]
        else:
            default = "none" if field.default is None else (
                f"./{field.default}" if isinstance(field.default, Path) else str(field.default))
        help_text = f"{field.description or ''} (default {default}; env HANDOFF_{name.upper()})".strip()
        if is_list:
            p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=_comma_list, metavar="A,B", help=help_text)
        else:
            p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, help=help_text)


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _settings_from(args: argparse.Namespace):
    from gateway.settings import Settings, load_settings

    return load_settings({k: getattr(args, k, None) for k in Settings.model_fields})


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.supervisor import run_serve, supervised

    if supervised():  # started by the node's supervisor: this is the control process
        from gateway.node import run_node

        return run_node(_settings_from(args))
    return run_serve(_settings_from(args))


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(_settings_from(args), callers=args.callers)


def cmd_cluster(args: argparse.Namespace) -> int:
    # Refuses (one line) without PostgreSQL.  The nodes route through the elected routing authority
    # (serve --cluster true); --independent-routing opts out: each node routes alone (gateway.cluster).
    from gateway.cluster import ClusterOptions, run_cluster

    return run_cluster(ClusterOptions(
        nodes=args.nodes, sip_port=args.sip_port, api_port=args.api_port, data_dir=args.data_dir,
        db_url=args.db_url, mqtt_url=args.mqtt_url, workers=args.workers,
        node_base_port=args.node_base_port or args.sip_port + 1,
        rtp_base_port=args.rtp_base_port or args.sip_port + 10000,
        independent_routing=args.independent_routing, config=args.config))


def cmd_front_door(args: argparse.Namespace) -> int:
    from gateway.cluster import run_front_door

    return run_front_door(nodes=args.node or [], data_dir=args.data_dir, api_port=args.api_port,
                          node_sources=args.node_sources, rpc_listen=args.rpc_listen, maxload=args.node_max_calls,
                          config=args.config, sip_port=args.sip_port)


def cmd_seat(args: argparse.Namespace) -> int:
    from gateway.simulators.seat import run_seat

    answer_after = None if args.answer_after == "never" else float(args.answer_after)
    return run_seat(seat_id=args.id, sip_port=args.sip_port, answer_after=answer_after,
                    hangup_after=args.hangup_after, record=args.record, tone_hz=args.tone,
                    respond=args.respond, max_calls=args.max_calls, srtp=args.srtp,
                    refer_to=args.refer_to, refer_after=args.refer_after)


def cmd_call(args: argparse.Namespace) -> int:
    from gateway.simulators.caller import run_caller

    return run_caller(to=args.to, digits=args.digits, gap=args.gap, stay=args.stay, dtmf=args.dtmf,
                      tone_hz=args.tone, record=args.record, first_digit_after=args.first_digit_after,
                      local_port=args.local_port, hangup_at=args.hangup_at, number=args.number, srtp=args.srtp)


def cmd_check_flow(args: argparse.Namespace) -> int:
    from ivr.check import check_flow_main

    return check_flow_main(args.file)


async def _token_database(engine) -> None:  # type: ignore[no-untyped-def]
    """Bring the operator's database to the current schema before a token command touches it.

    A fresh database, or one a node made, is migrated (so a later ``serve`` finds it at head); one
    whose tables were made without migrations (a test's) only gets the API's missing tables.
    """
    import sqlalchemy as sa

    from api.tokens import TokenStore
    from gateway.schema import upgrade_schema

    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
    if not names or "alembic_version" in names:
        await upgrade_schema(engine)
    else:
        await TokenStore(engine).create_schema()


def cmd_token(args: argparse.Namespace) -> int:
    from api.tokens import create_token_main, list_tokens_main, revoke_token_main

    if args.token_cmd == "list":
        return list_tokens_main(args.data_dir, args.db_url, include_dead=args.all, as_json=args.json,
                                prepare=_token_database)
    if args.token_cmd == "revoke":
        return revoke_token_main(args.id, args.data_dir, args.db_url, prepare=_token_database)
    return create_token_main(role=args.role, seat_id=args.seat, data_dir=args.data_dir, db_url=args.db_url,
                             ttl_days=args.ttl, label=args.label, prepare=_token_database)


def cmd_recordings(args: argparse.Namespace) -> int:
    from recordings.cli import recordings_main

    return recordings_main(action=args.action, data_dir=args.data_dir, db_url=args.db_url, days=args.days)


_BENCHES: dict[str, tuple[str, str]] = {
    "sip": ("gateway.bench.sip", "main"),
    "full": ("gateway.bench.full", "main"),
    "handoff": ("gateway.bench.handoff", "main"),
    "ivr": ("ivr.bench", "main"),
    "routing": ("routing.bench", "main"),
    "api": ("gateway.bench.api", "main"),
    "faults": ("gateway.bench.faults", "main"),
}


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    if args.what == "all":
        from gateway.bench.report import run_all

        if args.out is None:
            print("handoff122 bench all: --out DIR is required (the report and plots go there)", file=sys.stderr)
            return 2
        return run_all(dict(_BENCHES), out=args.out, quick=args.quick, as_json=args.json)
    # cluster: not part of `bench all` (it starts whole clusters; docs/CLUSTER.md)
    module, fn = ("gateway.bench.cluster", "main") if args.what == "cluster" else _BENCHES[args.what]
    run: Callable[..., int] = getattr(importlib.import_module(module), fn)
    extra: dict[str, object] = {}
    if args.calls is not None or args.cases is not None:
        if args.what != "faults":
            print("handoff122 bench: --calls and --cases are for `bench faults`", file=sys.stderr)
            return 2
        extra = {"calls": args.calls, "only": args.cases}
    return run(as_json=args.json, quick=args.quick, **extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="handoff122", description="122 call-handoff gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run one node: SIP gateway + IVR + routing + API + recordings",
                       description="Run one node: SIP gateway + IVR + routing + API + recordings. Every flag is "
                       "also an environment variable HANDOFF_<NAME> and a key of the --config file; flags win, "
                       "then the environment, then the file. Defaults run on one laptop (SQLite in ./var).")
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
    p.add_argument("--db-url", help="PostgreSQL URL shared by every node (required; SQLite is refused)")
    p.add_argument("--mqtt-url", help="mqtt://host:port of the event bus shared by every node")
    p.add_argument("--workers", type=int, default=2, help="media workers per node")
    p.add_argument("--node-base-port", type=int, default=0,
                   help="first internal port of the nodes (each takes workers + 2); default sip-port + 1")
    p.add_argument("--rtp-base-port", type=int, default=0,
                   help="first RTP port of the nodes (each takes workers x 40); default sip-port + 10000")
    p.add_argument("--config", type=Path, help="settings file every node and the front door read (HANDOFF_* too)")
    p.add_argument("--independent-routing", action="store_true",
                   help="opt out of the routing authority: each node routes its own callers alone "
                        "(two nodes then must not share seats; tests of the front door's guard)")
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser("front-door", help="only the cluster front door (SIP) and API door, for nodes on other machines")
    p.add_argument("--node", action="append", metavar="NAME=HOST:SIP:API",
                   help="a node: its Kamailio's SIP port and its API port (repeat for each node)")
    p.add_argument("--sip-port", type=int, help="public SIP port (default: the sip_port setting)")
    p.add_argument("--api-port", type=int, default=8000, help="the cluster's API port (0 = none)")
    p.add_argument("--data-dir", type=Path, default=Path("./var/front-door"))
    p.add_argument("--node-sources", type=_comma_list, metavar="A,B",
                   help="IPs/CIDRs the nodes' workers send seat INVITEs from (default: the nodes' hosts)")
    p.add_argument("--rpc-listen", metavar="udp:IP:PORT",
                   help="JSON-RPC for the nodes (seat credentials, registrations) on a private address; "
                        "default a Unix socket in the data dir (nodes on this machine only)")
    p.add_argument("--node-max-calls", type=int, default=64, help="calls the front door gives one node at once")
    p.add_argument("--config", type=Path, help="settings file (edge trust, service numbers, sip_host...)")
    p.set_defaults(func=cmd_front_door)

    p = sub.add_parser("seat", help="a simulated seat phone (pjsua2)")
    p.add_argument("--id", required=True)
    p.add_argument("--sip-port", type=int, required=True)
    p.add_argument("--answer-after", default="0.5", help="seconds, or 'never'")
    p.add_argument("--hangup-after", type=float, default=None)
    p.add_argument("--record", type=Path)
    p.add_argument("--tone", type=float, default=1000.0)
    p.add_argument("--respond", type=int, default=None, help="answer every INVITE with this final code (486, 603…)")
    p.add_argument("--max-calls", type=int, default=0, help="exit after this many calls (0 = run until killed)")
    p.add_argument("--srtp", choices=["off", "optional", "mandatory"], default="off", help="SRTP (SDES) on the call")
    p.add_argument("--refer-to", default=None, help="press the phone's transfer key: REFER the call to this URI")
    p.add_argument("--refer-after", type=float, default=2.0, help="seconds after answering to send the REFER")
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
    p.add_argument("--number", default="caller", help="the caller's number (user part of From)")
    p.add_argument("--srtp", choices=["off", "optional", "mandatory"], default="off",
                   help="SRTP (SDES); with --to ...;transport=tls the call goes over TLS")
    p.set_defaults(func=cmd_call)

    p = sub.add_parser("check-flow", help="validate an IVR flow file")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_check_flow)

    p = sub.add_parser("token", help="API tokens")
    tsub = p.add_subparsers(dest="token_cmd", required=True)
    t = tsub.add_parser("create", help="print a new API token (stored hashed, with an expiry)")
    t.add_argument("--role", choices=["supervisor", "seat", "admin"], required=True)
    t.add_argument("--seat")
    t.add_argument("--ttl", type=float, metavar="DAYS",
                   help="days until it expires (default 30 for seat and supervisor, 7 for admin)")
    t.add_argument("--label", default="cli", help="a note shown by `token list` (who or what it is for)")
    t.add_argument("--data-dir", type=Path, default=Path("./var"))
    t.add_argument("--db-url")
    t.set_defaults(func=cmd_token)
    t = tsub.add_parser("list", help="id, role, seat, created, expires, last used (never a secret)")
    t.add_argument("--all", action="store_true", help="also revoked and expired tokens")
    t.add_argument("--json", action="store_true", help="one JSON array")
    t.add_argument("--data-dir", type=Path, default=Path("./var"))
    t.add_argument("--db-url")
    t.set_defaults(func=cmd_token)
    t = tsub.add_parser("revoke", help="revoke a token by its id (from `token list`)")
    t.add_argument("id", type=int)
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
    p.add_argument("what", choices=[*sorted(_BENCHES), "cluster", "all"], help="one benchmark, or all of them (needs --out)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--quick", action="store_true", help="a smaller run (smoke test)")
    p.add_argument("--out", type=Path, help="with all: directory for report.md, the figures as JSON and the plots")
    p.add_argument("--calls", type=int, help="faults: about this many calls in all, spread over the cases "
                   "(e.g. 1000: the issue's goal)")
    p.add_argument("--cases", help="faults: only these cases, comma-separated (e.g. seat_lost)")
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
