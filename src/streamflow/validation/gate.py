"""The gate downstream steps ask: plain SQL on ``quality.validation_results``, no GX import.

A month is valid when, for every suite, its latest result passed and the data
it validated is the month's latest load: each result records the ``loaded_at``
the marts held for that month when it was validated, and the gate compares it
with ``raw.ingestion_log.loaded_at`` now. A pass on data that has since been
re-ingested, or on marts not yet rebuilt from the latest load, proves nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from typing import TextIO

from streamflow.db import connect
from streamflow.errors import GateError
from streamflow.settings import Settings
from streamflow.validation.contract import MARTS, MARTS_SCHEMA, QUALITY_SCHEMA, SUITE_NAMES

RESULTS_TABLE = f"{QUALITY_SCHEMA}.validation_results"

DDL = f"""
create schema if not exists {QUALITY_SCHEMA};
create table if not exists {RESULTS_TABLE} (
    run_id text not null,
    as_of date not null,
    suite text not null,
    success boolean not null,           -- no blocking (critical) failure
    validated_at timestamptz not null,
    blocking jsonb not null,            -- failed critical expectations, with sample values
    warnings jsonb not null,            -- failed warning-level expectations
    evaluated integer not null,
    month_loaded_at timestamptz,        -- the oldest loaded_at of the month in the marts validated
    data_docs text,
    primary key (run_id, as_of, suite)
);
create index if not exists validation_results_latest
    on {RESULTS_TABLE} (as_of, suite, validated_at desc);
comment on table {RESULTS_TABLE} is
    'One row per (validation run, month, suite); written by streamflow.validation.validate';
"""

MAX_LISTED = 2  # failing suites named per month in a GateError; the rest are counted

# Serialises DDL from concurrent runs (create ... if not exists can still race).
_LOCK = 0x5F6761_7465  # "_gate"


@dataclass
class SuiteOutcome:
    suite: str
    as_of: date
    evaluated: int = 0
    blocking: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.blocking


def ensure_schema(conn) -> None:
    conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK,))
    conn.execute(DDL)


def marts_loaded_at(settings: Settings, months: list[date]) -> dict[date, object]:
    """as_of -> the oldest ``loaded_at`` any mart holds for it (index probes; absent: no row).

    Taken before validating: if the marts are rebuilt meanwhile, the recorded value
    is older than the log's and the month reads as stale, never as validated.
    """
    probes = " union all ".join(
        f"select as_of, (select min(loaded_at) from {MARTS_SCHEMA}.{m} where as_of = months.as_of) as t "
        "from months" for m in MARTS)
    with connect(settings) as conn:
        present = [m for m in MARTS
                   if conn.execute("select to_regclass(%s)", (f"{MARTS_SCHEMA}.{m}",)).fetchone()[0]]
        if len(present) < len(MARTS):
            return {}
        rows = conn.execute(f"with months(as_of) as (select unnest(%s::date[])) "
                            f"select as_of, min(t) from ({probes}) x group by as_of", (months,)).fetchall()
    return dict(rows)


def record(settings: Settings, run_id: str, outcomes: list[SuiteOutcome], data_docs: str | None,
           loaded: dict[date, object]) -> None:
    """Store ``outcomes``; ``loaded``: :func:`marts_loaded_at` as taken before validating."""
    with connect(settings) as conn:
        ensure_schema(conn)
        validated_at = conn.execute("select clock_timestamp()").fetchone()[0]
        with conn.cursor() as cur:
            cur.executemany(
                f"insert into {RESULTS_TABLE} (run_id, as_of, suite, success, validated_at, blocking, "
                "warnings, evaluated, month_loaded_at, data_docs) "
                "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [(run_id, o.as_of, o.suite, o.success, validated_at, json.dumps(o.blocking, default=str),
                  json.dumps(o.warnings, default=str), o.evaluated, loaded.get(o.as_of), data_docs)
                 for o in outcomes])


@dataclass(frozen=True)
class MonthStatus:
    as_of: date
    state: str  # "passed", "failed", "stale" or "missing"
    detail: str = ""
    data_docs: str | None = None


def _latest(conn) -> dict[date, dict[str, tuple]]:
    """as_of -> suite -> (success, blocking, month_loaded_at, current log loaded_at, data_docs)."""
    if not conn.execute("select to_regclass(%s) is not null", (RESULTS_TABLE,)).fetchone()[0]:
        return {}
    has_log = conn.execute("select to_regclass('raw.ingestion_log') is not null").fetchone()[0]
    current = "l.loaded_at" if has_log else "r.month_loaded_at"
    join = "left join raw.ingestion_log l using (as_of)" if has_log else ""
    rows = conn.execute(f"""
        select r.as_of, r.suite, r.success, r.blocking, r.month_loaded_at, {current}, r.data_docs
        from (select distinct on (as_of, suite) *
              from {RESULTS_TABLE}
              order by as_of, suite, validated_at desc, run_id desc) r
        {join}""").fetchall()
    out: dict[date, dict[str, tuple]] = {}
    for as_of, suite, *rest in rows:
        out.setdefault(as_of, {})[suite] = tuple(rest)
    return out


def _status(as_of: date, suites: dict[str, tuple] | None) -> MonthStatus:
    suites = suites or {}
    missing = [s for s in SUITE_NAMES if s not in suites]
    if len(missing) == len(SUITE_NAMES):
        return MonthStatus(as_of, "missing", "never validated")
    docs = next((r[4] for r in suites.values() if r[4]), None)
    failed = [(s, suites[s][1]) for s in SUITE_NAMES if s in suites and not suites[s][0]]
    if failed:
        parts = []
        for suite, blocking in failed[:MAX_LISTED]:
            first = blocking[0] if blocking else {"expectation": "?"}
            where = f"({first['where']})" if first.get("where") else ""
            more = f" (+{len(blocking) - 1} more)" if len(blocking) > 1 else ""
            parts.append(f"{suite}: {first['expectation']}{where}{more}")
        if len(failed) > MAX_LISTED:
            parts.append(f"{len(failed) - MAX_LISTED} more suite(s)")
        return MonthStatus(as_of, "failed", "failed validation: " + "; ".join(parts), docs)
    if missing:
        return MonthStatus(as_of, "missing", "never validated for suite(s) " + ", ".join(missing), docs)
    if any(r[2] is None or r[2] != r[3] for r in suites.values()):
        return MonthStatus(as_of, "stale", "validated on data older than its latest load "
                           "(re-ingested since, or validated before `make build`)", docs)
    return MonthStatus(as_of, "passed", "", docs)


def month_statuses(settings: Settings, months: list[date] | None = None) -> list[MonthStatus]:
    """The gate's verdict on ``months`` (default: every loaded month, i.e. in raw.ingestion_log;
    without a raw layer, every month ever validated). A month no longer loaded is no candidate,
    whatever its old results say."""
    with connect(settings) as conn:
        latest = _latest(conn)
        if months is None:
            has_log = conn.execute("select to_regclass('raw.ingestion_log') is not null").fetchone()[0]
            months = [r[0] for r in conn.execute("select as_of from raw.ingestion_log")] if has_log \
                else list(latest)
    return [_status(m, latest.get(m)) for m in sorted(months)]


def validated_months(settings: Settings, out: TextIO | None = None) -> list[date]:
    """Months (ascending) whose latest validation passed for every suite and is still current.

    With ``out``, every other loaded month is named there with the reason it is left
    out, so a step that uses "every validated month" never drops one silently.
    """
    statuses = month_statuses(settings)
    if out is not None:
        for s in statuses:
            if s.state != "passed":
                print(f"note: leaving out {_explain(s)}", file=out)
    return [s.as_of for s in statuses if s.state == "passed"]


def _explain(s: MonthStatus) -> str:
    day = s.as_of.isoformat()
    how = {"failed": f"run `make validate AS_OF={day}` to see why",
           "stale": f"run `make build` then `make validate AS_OF={day}`"}.get(
        s.state, f"run `make validate AS_OF={day}` to validate it")
    line = f"month {day} {s.detail}: {how}"
    if s.state == "failed" and s.data_docs:
        line += f" (Data Docs: {s.data_docs})"
    return line


def require_validated(settings: Settings, months: list[date]) -> None:
    """Raise GateError naming every month in ``months`` that may not be used, and how to see why."""
    bad = [s for s in month_statuses(settings, sorted(set(months))) if s.state != "passed"]
    if bad:
        raise GateError("not validated, refusing to use it:\n  " + "\n  ".join(map(_explain, bad)))
