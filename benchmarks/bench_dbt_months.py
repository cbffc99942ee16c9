"""Measure `dbt build` per added month (not part of the test suite).

    .venv/bin/streamflow generate --out /tmp/gen200k --users 200000 --months 4
    .venv/bin/python benchmarks/bench_dbt_months.py /tmp/gen200k [--database sf_dbt_bench]

Recreates the database, then for each month: ingest it, `dbt build`, and print
the wall time, dbt's elapsed time, and the summed execution time of the marts
and of the data tests (from run_results.json); then a no-op build and a full
refresh of all months for comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import psycopg
from psycopg import sql

from streamflow.build import dbt_build, target_dir
from streamflow.db import ensure_up
from streamflow.ingest import discover_months, ingest_month
from streamflow.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("seeds", type=Path)
    parser.add_argument("--database", default="sf_dbt_bench")
    args = parser.parse_args()

    settings = ensure_up(load_settings({**os.environ, "POSTGRES_DB": args.database}))
    maintenance = dataclasses.replace(settings, database="postgres").conninfo
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(args.database)))
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(args.database)))

    results = []

    def build(label: str, **kwargs) -> None:
        started = time.monotonic()
        dbt_build(settings, **kwargs)
        wall = time.monotonic() - started
        run = json.loads((target_dir(settings) / "run_results.json").read_text())
        marts = sum(r["execution_time"] for r in run["results"]
                    if r["unique_id"].startswith("model.") and ".stg_" not in r["unique_id"])
        tests = sum(r["execution_time"] for r in run["results"] if r["unique_id"].startswith("test."))
        results.append((label, wall, run["elapsed_time"], marts, tests, os.getloadavg()[0]))

    for folder, as_of in discover_months(args.seeds):
        ingest_month(settings, folder, as_of, quiet=True)
        build(f"+ {as_of}")
    build("no-op")
    build("full refresh", full_refresh=True)

    print(f"\n{'build':<16}{'wall s':>8}{'dbt s':>8}{'marts s':>9}{'tests s':>9}{'load':>6}")
    for label, wall, elapsed, marts, tests, load in results:
        print(f"{label:<16}{wall:>8.1f}{elapsed:>8.1f}{marts:>9.1f}{tests:>9.1f}{load:>6.1f}")


if __name__ == "__main__":
    main()
