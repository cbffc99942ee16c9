"""Mart tables built straight from docs/contracts.md, for development and benchmarks.

The dbt project owns the real marts. This module exists so the Feast layer can be
developed and benchmarked on its own: it creates the contract's tables in the
``marts`` schema and fills them either from an export folder (same cleaning rules
as ingestion: user_id trimmed, empty cell = NULL) or with synthetic users at a
scale the real exports do not reach. Nothing in the pipeline imports it.
"""

from __future__ import annotations

from datetime import date, datetime, time, timezone
from pathlib import Path

import psycopg
from psycopg import sql

from streamflow.marts import FEATURE_COLUMNS, MARTS_SCHEMA, SOURCE_EXPORT
from streamflow.settings import Settings

# mart -> (export file stem, feature columns with their contract types)
MART_CONTRACT: dict[str, tuple[str, list[tuple[str, str]]]] = {
    mart: (SOURCE_EXPORT[mart], list(cols)) for mart, cols in FEATURE_COLUMNS.items()}


def create_marts(conn: psycopg.Connection) -> None:
    conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(MARTS_SCHEMA)))
    for mart, (_, cols) in MART_CONTRACT.items():
        ddl = ", ".join(f"{c} {t}" for c, t in cols)
        conn.execute(
            f"create table if not exists {MARTS_SCHEMA}.{mart} ("
            f"user_id text not null, as_of date not null, event_timestamp timestamptz not null, "
            f"loaded_at timestamptz not null, {ddl}, primary key (user_id, as_of))")


def load_month(settings: Settings, month_dir: Path, as_of: date,
               loaded_at: datetime | None = None) -> None:
    """Replace one month of every mart with the CSVs of ``month_dir``."""
    loaded_at = loaded_at or datetime.now(timezone.utc)
    with psycopg.connect(settings.conninfo) as conn:
        create_marts(conn)
        for mart, (stem, cols) in MART_CONTRACT.items():
            names = ["user_id"] + [c for c, _ in cols]
            cols_ddl = ", ".join(f"{n} text" for n in names)
            conn.execute(f"create temp table _csv ({cols_ddl}) on commit drop")
            copy = f"copy _csv ({', '.join(names)}) from stdin with (format csv, header true)"
            with conn.cursor().copy(copy) as cp:
                cp.write((month_dir / f"{stem}.csv").read_bytes())
            casts = ", ".join(f"nullif(btrim({c}), '')::{t}" for c, t in cols)
            conn.execute(f"delete from {MARTS_SCHEMA}.{mart} where as_of = %s", (as_of,))
            conn.execute(
                f"insert into {MARTS_SCHEMA}.{mart} "
                f"select btrim(user_id), %s::date, (%s::date::timestamp at time zone 'UTC'), %s, {casts} "
                f"from _csv", (as_of, as_of, loaded_at))
            conn.execute("drop table _csv")
            conn.execute(f"analyze {MARTS_SCHEMA}.{mart}")
        conn.commit()


def load_exports(settings: Settings, seeds_dir: Path, first_as_of: date = date(2024, 1, 31)) -> list[date]:
    """Load every month_NNN folder; month k's as_of is the k-th month-end from ``first_as_of``."""
    months = []
    for i, month_dir in enumerate(sorted(seeds_dir.glob("month_[0-9][0-9][0-9]"))):
        as_of = month_end(first_as_of, i)
        load_month(settings, month_dir, as_of)
        months.append(as_of)
    return months


def month_end(first: date, k: int) -> date:
    y, m = divmod(first.year * 12 + first.month - 1 + k, 12)
    nxt = date(y + (m + 1) // 12, (m + 1) % 12 + 1, 1)
    return date.fromordinal(nxt.toordinal() - 1)


def generate(settings: Settings, users: int, months: list[date]) -> None:
    """Synthetic marts: ``users`` users in every month, values varying by user and month."""
    with psycopg.connect(settings.conninfo) as conn:
        create_marts(conn)
        for mart in MART_CONTRACT:
            conn.execute(f"truncate {MARTS_SCHEMA}.{mart}")
        for k, as_of in enumerate(months):
            loaded = datetime.combine(as_of, time(6), timezone.utc)
            # h(n) = a deterministic pseudo-random integer in [0, 2^31) per user, month and salt.
            base = (
                "select 'U' || lpad(g::text, 8, '0') as user_id, %(as_of)s::date as as_of, "
                "(%(as_of)s::date::timestamp at time zone 'UTC') as event_timestamp, "
                "%(loaded)s::timestamptz as loaded_at, g, abs(hashint8(g * 131 + %(k)s)) as h "
                "from generate_series(1, %(users)s) g")
            exprs = {
                "user_profile_snapshots":
                    "date '2015-01-01' + (abs(hashint8(g)) %% 3000)::int, "
                    "case when g %% 2 = 0 then 'Female' else 'Male' end, g %% 6 = 0, g %% 3 = 0, g %% 4 = 0",
                "subscriptions_profile_snapshots":
                    "(abs(hashint8(g)) %% 72)::int + %(k)s, (h %% 3 = 0), (h %% 5 = 0), "
                    "(array['Month-to-month','One year','Two year'])[1 + h %% 3], h %% 2 = 0, "
                    "round((20 + (h %% 10000) / 100.0)::numeric, 2), "
                    "round((h %% 900000 / 100.0)::numeric, 2), "
                    "(array['DSL','Fiber optic','No'])[1 + (h / 7) %% 3]",
                "usage_agg_30d_snapshots":
                    "(h %% 100000) / 997.0, (h %% 3001) / 61.0, (h %% 5)::int, (h %% 17)::int, (h %% 9)::int",
                "payments_agg_90d_snapshots": "(h %% 4)::int",
                "support_agg_90d_snapshots":
                    "(h %% 6)::int, "
                    "case when h %% 6 = 0 then null else round((h %% 5000 / 100.0)::numeric, 2) end",
                "labels_snapshots": "h %% 4 = 0",
            }
            for mart, expr in exprs.items():
                conn.execute(
                    f"insert into {MARTS_SCHEMA}.{mart} "
                    f"select user_id, as_of, event_timestamp, loaded_at, {expr} "
                    f"from ({base}) s",
                    {"as_of": as_of, "loaded": loaded, "k": k, "users": users})
        conn.commit()
        conn.autocommit = True
        for mart in MART_CONTRACT:
            conn.execute(f"analyze {MARTS_SCHEMA}.{mart}")
