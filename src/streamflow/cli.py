"""`streamflow` command line: one sub-command per pipeline step.

Each step's code lives in its own module and is imported lazily, so that
`streamflow db status` does not pay for importing dbt, Feast or GX.
Errors meant for a human (bad input, failed gate) exit non-zero with a
message and no stack trace.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from streamflow.errors import StreamflowError


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1: {text!r}")
    return value


def _port(text: str) -> int:
    from streamflow.settings import port_number

    try:
        return port_number("--port", text)
    except StreamflowError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _settings(up: bool = True):
    from streamflow.db import ensure_up
    from streamflow.settings import get_settings

    s = get_settings()
    s.export_env()
    return ensure_up(s) if up else s


def cmd_db(args) -> int:
    from streamflow import db

    s = _settings(up=False)
    where = f"{s.host}:{s.port} db={s.database} user={s.user}"
    if args.action == "up":
        if s.embedded:
            started = db.start_embedded(s)
            print(f"embedded PostgreSQL {'started' if started else 'already running'} at {where}")
        else:
            db.ensure_up(s)
            print(f"using your PostgreSQL at {where} (POSTGRES_HOST is set; embedded server not used)")
    elif args.action == "down":
        if not s.embedded:
            print("POSTGRES_HOST is set: not stopping a server this project does not own")
        else:
            print("stopped" if db.stop_embedded(s) else "embedded PostgreSQL was not running")
    else:
        kind = f"embedded ({db.embedded_status(s)}, data in {s.pgdata})" if s.embedded else "external"
        print(f"PostgreSQL: {kind} at {where}")
        print(f"SEEDS_DIR: {s.seeds_dir}")
    return 0


def cmd_generate(args) -> int:
    from streamflow.generate import generate

    try:
        generate(args.out, users=args.users, months=args.months, seed=args.seed,
                 first_as_of=args.first_as_of)
    except OSError as exc:
        raise StreamflowError(f"cannot write sample exports to {args.out}: {exc.strerror or exc}") from exc
    return 0


def cmd_ingest(args) -> int:
    from streamflow.ingest import ingest_month

    ingest_month(_settings(), Path(args.month_dir), args.as_of)
    return 0


def cmd_unload(args) -> int:
    from streamflow.ingest import unload_month

    unload_month(_settings(), args.as_of)
    return 0


def cmd_ingest_all(args) -> int:
    from streamflow.ingest import ingest_all

    s = _settings()
    seeds = Path(args.seeds_dir) if args.seeds_dir else s.seeds_dir
    ingest_all(s, seeds, generate_if_missing=args.seeds_dir is None)
    return 0


def cmd_build(args) -> int:
    from streamflow.build import dbt_build

    dbt_build(_settings())
    return 0


def cmd_docs(args) -> int:
    from streamflow.build import dbt_docs

    print(dbt_docs(_settings()))
    return 0


def cmd_validate(args) -> int:
    from streamflow.validation import validate

    return 0 if validate(_settings(), as_of=args.as_of) else 1


def cmd_apply(args) -> int:
    from streamflow.features.store import apply

    apply(_settings())
    return 0


def cmd_training_data(args) -> int:
    from streamflow.features.training import build_training_set

    build_training_set(_settings(), as_of=args.as_of)
    return 0


def cmd_materialize(args) -> int:
    from streamflow.features.materialize import materialize

    materialize(_settings())
    return 0


def cmd_check_skew(args) -> int:
    from streamflow.features.skew import check_skew

    return 0 if check_skew(_settings()) == 0 else 1


def cmd_online(args) -> int:
    from streamflow.features.online import print_online_features

    print_online_features(_settings(), args.user_id)
    return 0


def cmd_serve(args) -> int:
    from streamflow.api.server import serve
    from streamflow.api.service import ApiConfig

    config = ApiConfig.from_env(host=args.host, port=args.port, workers=args.workers)  # checked first
    serve(_settings(), config)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamflow", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("db", help="embedded PostgreSQL: up, down, status")
    d.add_argument("action", choices=["up", "down", "status"])
    d.set_defaults(func=cmd_db)

    g = sub.add_parser("generate", help="write sample month_NNN export folders")
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--users", type=_positive, default=5000)
    g.add_argument("--months", type=_positive, default=3)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--first-as-of", type=_date, default=date(2024, 1, 31),
                   help="as_of of month_000 (later months are the following month-ends)")
    g.set_defaults(func=cmd_generate)

    i = sub.add_parser("ingest", help="load one month folder into the raw schema")
    i.add_argument("month_dir")
    i.add_argument("--as-of", type=_date, required=True, help="the month's as_of date, YYYY-MM-DD")
    i.set_defaults(func=cmd_ingest)

    u = sub.add_parser("unload", help="withdraw a loaded month (raw rows, log entry, online values)")
    u.add_argument("--as-of", type=_date, required=True, help="the month's as_of date, YYYY-MM-DD")
    u.set_defaults(func=cmd_unload)

    ia = sub.add_parser("ingest-all", help="load every month_NNN folder (default: SEEDS_DIR)")
    ia.add_argument("seeds_dir", nargs="?")
    ia.set_defaults(func=cmd_ingest_all)

    sub.add_parser("build", help="dbt build").set_defaults(func=cmd_build)
    sub.add_parser("docs", help="dbt docs generate; prints the site folder").set_defaults(func=cmd_docs)

    v = sub.add_parser("validate", help="Great Expectations gate on the marts")
    v.add_argument("--as-of", type=_date)
    v.set_defaults(func=cmd_validate)

    sub.add_parser("apply", help="feast apply").set_defaults(func=cmd_apply)

    t = sub.add_parser("training-data", help="point-in-time training set")
    t.add_argument("--as-of", type=_date)
    t.set_defaults(func=cmd_training_data)

    sub.add_parser("materialize", help="load the online store").set_defaults(func=cmd_materialize)
    sub.add_parser("check-skew", help="online vs offline vectors").set_defaults(func=cmd_check_skew)

    o = sub.add_parser("online-features", help="print one user's online features")
    o.add_argument("user_id")
    o.set_defaults(func=cmd_online)

    sv = sub.add_parser("serve", help="run the feature API")
    sv.add_argument("--host", default=None, help="default API_HOST or 127.0.0.1")
    sv.add_argument("--port", type=_port, default=None, help="default API_PORT or 8000")
    sv.add_argument("--workers", type=_positive, default=None, help="default API_WORKERS or 1")
    sv.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except StreamflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
