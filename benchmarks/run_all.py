"""Run every benchmark in turn (`make bench`). Each prints its figures side by side
with its baseline (plain Feast, the raw-SQL floor, a full dbt refresh), so compare
ratios, not absolute seconds: machines are noisy.

    .venv/bin/python benchmarks/run_all.py [--quick]

--quick: smaller generated data sets and shorter load phases.
The API benchmark reads the online store that `make all` filled.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def run(*args: str) -> None:
    print(f"\n$ {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, *args], check=True, cwd=REPO)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    users = "50000" if args.quick else "200000"
    months_dir = REPO / "data" / "bench" / f"gen{users}x4"
    if not months_dir.is_dir():
        run("-m", "streamflow.cli", "generate", "--out", str(months_dir), "--users", users,
            "--months", "4", "--seed", "1")
    run(str(HERE / "bench_dbt_months.py"), str(months_dir))
    run(str(HERE / "bench_features.py"), "--users", users)
    run(str(HERE / "bench_api.py"), *(["--duration", "3", "--rounds", "1"] if args.quick else []))


if __name__ == "__main__":
    main()
