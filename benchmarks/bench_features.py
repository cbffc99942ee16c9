"""Feast layer benchmark: this project's apply / materialize / training set vs plain Feast 0.67.

    .venv/bin/python benchmarks/bench_features.py                 # real exports + 200k users
    .venv/bin/python benchmarks/bench_features.py --users 200000 1000000 --no-real

Each dataset gets its own database (``<POSTGRES_DB>_bench``), filled with the
contract's marts (streamflow.features.devdata: the real exports, or N synthetic
users x 2 months); the relations come from dbt's manifest like in production.
Every measured step runs in a fresh subprocess so its peak RSS is its own
(both sides pay the same ``import feast``; seconds exclude it). The two sides
do the same work:

- apply: ``streamflow apply`` vs ``feast -c feature_repo apply`` (whole CLI run);
- materialize, into empty online tables: ``materialize_months`` (one guarded
  INSERT ... SELECT per view) vs ``FeatureStore.materialize(start, end)`` over
  the whole window;
- training set over every label row: ``historical_features`` with the label rows
  as SQL vs ``get_historical_features`` with a pandas entity DataFrame, both
  through the ``churn_model_v1`` feature service, both to a DataFrame.

This is a script, not a test: it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
JAN, FEB = date(2024, 1, 31), date(2024, 2, 29)


def _settings(database: str):
    from streamflow.settings import load_settings

    return dataclasses.replace(load_settings(), database=database)


# ----------------------------------------------------------------------------- steps (child side)

def step(name: str, database: str) -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    s = _settings(database)
    s.export_env()
    from streamflow.features.store import get_store

    store = get_store(s)
    labels_sql = "select user_id, event_timestamp, churn_label from marts.labels_snapshots"
    t0 = time.perf_counter()
    rows = None
    if name == "ours_materialize":
        from streamflow.features.materialize import materialize_months

        res = materialize_months(s, FEB, [JAN, FEB], store=store, quiet=True)
        rows = sum(r.users for r in res)
    elif name == "plain_materialize":
        start = datetime(2023, 12, 1, tzinfo=timezone.utc)
        store.materialize(start_date=start, end_date=datetime(2024, 2, 29, tzinfo=timezone.utc))
        rows = None
    elif name == "ours_training":
        from streamflow.features.training import historical_features

        rows = len(historical_features(s, labels_sql, store))
    elif name == "plain_training":
        import pandas as pd
        import psycopg

        with psycopg.connect(s.conninfo) as conn:
            cur = conn.execute(labels_sql)
            entity_df = pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])
        entity_df["event_timestamp"] = pd.to_datetime(entity_df.event_timestamp, utc=True)
        t0 = time.perf_counter()  # the entity DataFrame is the caller's input, not Feast's work
        service = store.get_feature_service("churn_model_v1")
        rows = len(store.get_historical_features(entity_df=entity_df, features=service).to_df())
    else:
        raise SystemExit(f"unknown step {name}")
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows": rows,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_step(name: str, database: str) -> dict:
    out = subprocess.run([PY, __file__, "--step", name, "--database", database],
                         capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_cli(cmd: list[str], database: str) -> dict:
    env = {**os.environ, **_settings(database).env()}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return {"seconds": seconds, "warnings": [ln for ln in (out.stdout + out.stderr).splitlines()
                                             if "Warning" in ln]}


# ----------------------------------------------------------------------------- driver

def prepare(database: str, users: int | None) -> int:
    """A fresh database with the marts; returns the number of label rows."""
    import psycopg
    from psycopg import sql

    from streamflow import db
    from streamflow.features import devdata

    base = db.ensure_up(_settings(os.environ.get("POSTGRES_DB", "streamflow")))
    admin = (f"host={base.host} port={base.port} user={db.SUPERUSER} dbname=postgres" if base.embedded
             else dataclasses.replace(base, database="postgres").conninfo)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(database)))
        conn.execute(sql.SQL("create database {} owner {}").format(sql.Identifier(database),
                                                                   sql.Identifier(base.user)))
    s = _settings(database)
    if users is None:
        devdata.load_exports(s, s.seeds_dir)
    else:
        devdata.generate(s, users, [JAN, FEB])
    with psycopg.connect(s.conninfo) as conn:
        return conn.execute("select count(*) from marts.labels_snapshots").fetchone()[0]


def truncate_online(database: str) -> None:
    import psycopg

    with psycopg.connect(_settings(database).conninfo, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "select format('%I.%I', schemaname, tablename) from pg_tables where schemaname = 'feast'")]
        for t in tables:
            conn.execute(f"truncate {t}")


def bench(label: str, database: str, users: int | None) -> dict:
    print(f"\n== {label}: preparing {database} ...", flush=True)
    label_rows = prepare(database, users)
    r: dict = {"label": label, "label_rows": label_rows}
    r["ours_apply"] = run_cli([str(REPO / ".venv/bin/streamflow"), "apply"], database)
    r["plain_apply"] = run_cli([str(REPO / ".venv/bin/feast"), "-c", "feature_repo", "apply"], database)
    truncate_online(database)
    r["ours_materialize"] = run_step("ours_materialize", database)
    r["ours_rematerialize"] = run_step("ours_materialize", database)
    truncate_online(database)
    r["plain_materialize"] = run_step("plain_materialize", database)
    r["ours_training"] = run_step("ours_training", database)
    r["plain_training"] = run_step("plain_training", database)
    report(r)
    sys.stdout.flush()
    return r


def report(r: dict) -> None:
    users = r["label_rows"] // 2
    print(f"\n{r['label']}: {users} users x 2 months, {r['label_rows']} label rows")
    print(f"  {'step':<30}{'ours':>12}{'plain Feast':>14}{'speed-up':>10}{'peak MiB ours/plain':>24}")

    def line(name, ours, plain, per):
        sp = plain["seconds"] / ours["seconds"] if ours["seconds"] else float("nan")
        mem = (f"{ours.get('peak_rss_mib', 0):.0f} / {plain.get('peak_rss_mib', 0):.0f}"
               if "peak_rss_mib" in ours else "")
        rate = f"  ({per / ours['seconds']:,.0f} vs {per / plain['seconds']:,.0f} rows/s)" if per else ""
        print(f"  {name:<30}{ours['seconds']:>11.2f}s{plain['seconds']:>13.2f}s{sp:>9.1f}x{mem:>24}{rate}")

    line("apply (CLI, incl. imports)", r["ours_apply"], r["plain_apply"], None)
    line("materialize (empty store)", r["ours_materialize"], r["plain_materialize"], users * 5)
    print(f"  {'re-materialize (no-op)':<30}{r['ours_rematerialize']['seconds']:>11.2f}s")
    line("training set", r["ours_training"], r["plain_training"], r["label_rows"])
    warn = r["ours_apply"]["warnings"] + r["plain_apply"]["warnings"]
    if warn:
        print("  warnings printed by apply:", *warn, sep="\n    ")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, nargs="*", default=[200_000])
    p.add_argument("--no-real", action="store_true")
    p.add_argument("--step")
    p.add_argument("--database")
    a = p.parse_args()
    if a.step:
        print(json.dumps(step(a.step, a.database)))
        return 0
    base = os.environ.get("POSTGRES_DB", "streamflow")
    results = []
    if not a.no_real:
        results.append(bench("real exports", f"{base}_bench", None))
    for n in a.users:
        results.append(bench(f"generated {n:,} users", f"{base}_bench", n))
    print("\n== summary")
    for r in results:
        report(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
