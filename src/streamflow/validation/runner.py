"""``validate``: run every suite on every month, print a compact table, record, build Data Docs."""

from __future__ import annotations

import sys
from datetime import date, datetime, timezone
from pathlib import Path

from streamflow.db import connect
from streamflow.errors import StreamflowError
from streamflow.settings import Settings
from streamflow.validation import gate, project
from streamflow.validation.contract import COVERAGE_SUITE, MARTS, MARTS_SCHEMA, SUITE_NAMES
from streamflow.validation.gate import SuiteOutcome

SAMPLE_VALUES = 3
MAX_LINES = 3  # failing expectations shown per suite and month; Data Docs has them all


def missing_marts(settings: Settings) -> list[str]:
    with connect(settings) as conn:
        return [f"{MARTS_SCHEMA}.{m}" for m in MARTS
                if not conn.execute("select to_regclass(%s)", (f"{MARTS_SCHEMA}.{m}",)).fetchone()[0]]


def months_to_validate(settings: Settings) -> list[date]:
    """Every as_of present in a mart or in raw.ingestion_log (an ingested month a mart lacks must fail)."""
    with connect(settings) as conn:
        sources = [f"select as_of from {MARTS_SCHEMA}.{m}" for m in MARTS
                   if conn.execute("select to_regclass(%s)", (f"{MARTS_SCHEMA}.{m}",)).fetchone()[0]]
        if conn.execute("select to_regclass('raw.ingestion_log')").fetchone()[0]:
            sources.append("select as_of from raw.ingestion_log")
        if not sources:
            return []
        return [r[0] for r in conn.execute(" union ".join(sources) + " order by 1").fetchall()]


def mean_parameters(settings: Settings, as_of: date) -> dict[str, float | None]:
    """Band for each MEAN_BANDS column from the mart's latest month before ``as_of`` (None: no band)."""
    from streamflow.validation.suites import MEAN_BAND_RELATIVE, MEAN_BANDS, mean_parameter

    params: dict[str, float | None] = {}
    with connect(settings) as conn:
        for mart, cols in MEAN_BANDS.items():
            exists = conn.execute("select to_regclass(%s)", (f"{MARTS_SCHEMA}.{mart}",)).fetchone()[0]
            row = None
            if exists:
                means = ", ".join(f"avg({c})::float8" for c in cols)
                row = conn.execute(
                    f"select {means} from {MARTS_SCHEMA}.{mart} where as_of = "
                    f"(select max(as_of) from {MARTS_SCHEMA}.{mart} where as_of < %s)", (as_of,)).fetchone()
            for i, col in enumerate(cols):
                mean = row[i] if row else None
                params[mean_parameter(col, "min")] = None if mean is None else mean * (1 - MEAN_BAND_RELATIVE)
                params[mean_parameter(col, "max")] = None if mean is None else mean * (1 + MEAN_BAND_RELATIVE)
    return params


def _describe(result) -> dict:
    """One failed expectation: its name, where, and a few of the values that failed."""
    config = result.expectation_config
    kwargs = config.kwargs
    where = kwargs.get("column") or kwargs.get("column_list") or (
        f"{kwargs['column_A']}, {kwargs['column_B']}" if "column_A" in kwargs else None)
    res = result.result or {}
    info = result.exception_info or {}
    if info.get("raised_exception"):
        shown = "error: " + str(info.get("exception_message", "")).splitlines()[0][:200]
    elif res.get("partial_unexpected_list"):
        values = res["partial_unexpected_list"][:SAMPLE_VALUES]
        count = res.get("unexpected_count")
        shown = f"{count} unexpected, e.g. " + ", ".join(map(_short, values))
    elif "details" in res and isinstance(res["details"], dict) and res["details"].get("unexpected_rows"):
        rows = res["details"]["unexpected_rows"][:SAMPLE_VALUES]
        shown = f"{res.get('observed_value')} rows, e.g. " + "; ".join(map(_short, rows))
    else:
        shown = f"observed {_short(res.get('observed_value'))}"
    return {
        "expectation": config.type,
        "where": where if isinstance(where, str) or where is None else ", ".join(where),
        "description": config.description,
        "severity": str(getattr(config.severity, "value", config.severity)),
        "shown": shown,
        "kwargs": {k: v for k, v in kwargs.items() if k not in ("batch_id",)},
    }


def _short(value) -> str:
    if isinstance(value, dict):
        value = {k: v for k, v in value.items()}
        return "(" + ", ".join(f"{k}={_short(v)}" for k, v in value.items()) + ")"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(_short, value)) + "]"
    return str(value)


def _outcome(suite: str, as_of: date, validation_result) -> SuiteOutcome:
    outcome = SuiteOutcome(suite, as_of, evaluated=len(validation_result.results))
    for r in validation_result.results:
        if r.success:
            continue
        described = _describe(r)
        (outcome.blocking if described["severity"] == "critical" else outcome.warnings).append(described)
    return outcome


def _no_batch(suite: str, as_of: date) -> SuiteOutcome:
    # GX cannot form a batch from a month with no rows; report it as the row-count
    # expectation every suite carries, so an empty month reads like any other failure.
    what = "the marts have no row" if suite == COVERAGE_SUITE else "no rows"
    return SuiteOutcome(suite, as_of, evaluated=1, blocking=[{
        "expectation": "expect_table_row_count_to_be_between" if suite != COVERAGE_SUITE
        else "expect_table_row_count_to_equal",
        "where": None, "description": "the month has rows", "severity": "critical",
        "shown": f"observed 0 ({what} for as_of {as_of.isoformat()})", "kwargs": {},
    }])


def run_month(context, checkpoints: dict, settings: Settings, as_of: date, run_id) -> tuple[list, list]:
    from great_expectations.exceptions.exceptions import NoAvailableBatchesError

    batch = {"year": as_of.year, "month": as_of.month, "day": as_of.day}
    params = mean_parameters(settings, as_of)
    outcomes, result_ids = [], []
    for suite in SUITE_NAMES:
        try:
            result = checkpoints[suite].run(batch_parameters=batch, expectation_parameters=params,
                                            run_id=run_id)
        except NoAvailableBatchesError:
            outcomes.append(_no_batch(suite, as_of))
            continue
        for result_id, validation_result in result.run_results.items():
            result_ids.append(result_id)
            outcomes.append(_outcome(suite, as_of, validation_result))
    return outcomes, result_ids


def format_table(outcomes: list[SuiteOutcome]) -> str:
    width = max(len(s) for s in SUITE_NAMES)
    lines = [f"{'suite':<{width}}  {'as_of':<10}  {'result':<6}  failing expectation (sample values)",
             f"{'-' * width}  {'-' * 10}  {'-' * 6}  {'-' * 36}"]
    for o in outcomes:
        items = [("FAIL", f) for f in o.blocking] + [("warn", f) for f in o.warnings]
        hidden = max(0, len(items) - MAX_LINES)
        items = items[:MAX_LINES]
        if not items:
            lines.append(f"{o.suite:<{width}}  {o.as_of.isoformat()}  {'pass':<6}")
            continue
        for i, (label, f) in enumerate(items):
            head = f"{o.suite:<{width}}  {o.as_of.isoformat()}" if i == 0 else " " * (width + 12)
            where = f"({f['where']})" if f.get("where") else ""
            note = f" [{f['description']}]" if f.get("description") else ""
            lines.append(f"{head}  {label:<6}  {f['expectation']}{where}{note}: {f['shown']}")
        if hidden:
            lines.append(f"{' ' * (width + 12)}  {'':<6}  ... {hidden} more (see Data Docs)")
    return "\n".join(lines)


def validate(settings: Settings, as_of: date | None = None, *, project_root: Path | None = None,
             out=None) -> bool:
    """Validate ``as_of`` (default: every month present). True when no blocking failure."""
    from great_expectations.core.run_identifier import RunIdentifier

    out = out or sys.stdout
    missing = missing_marts(settings)
    if missing:
        raise StreamflowError(f"mart table(s) missing: {', '.join(missing)}; run `make build` first")
    present = months_to_validate(settings)
    if not present:
        raise StreamflowError("nothing to validate: no month in raw.ingestion_log or the marts "
                              "(run `make ingest build` first)")
    if as_of is not None and as_of not in present:
        raise StreamflowError(f"month {as_of} is neither loaded nor in the marts (months: "
                              f"{', '.join(m.isoformat() for m in present)})")
    months = [as_of] if as_of else present
    started = datetime.now(timezone.utc)
    run_id = RunIdentifier(run_name=f"validate-{started:%Y%m%dT%H%M%S%fZ}", run_time=started)
    outcomes, result_ids = [], []
    loaded = gate.marts_loaded_at(settings, months)
    with project.quiet_gx() as gx_output, project.settings_env(settings):
        try:
            context = project.get_context(project_root or project.PROJECT_ROOT)
            checkpoints = project.sync(context)
            for month in months:
                month_outcomes, ids = run_month(context, checkpoints, settings, month, run_id)
                outcomes += month_outcomes
                result_ids += ids
            project.prune_results(project_root or project.PROJECT_ROOT)
            # Incremental: pages for this run's results, then the index (which drops pruned ones).
            sites = context.build_data_docs(resource_identifiers=result_ids) if result_ids else {}
        except Exception as exc:
            # GX's own output only matters when it failed; show it then.
            raise StreamflowError(f"validation could not run: {type(exc).__name__}: {exc}\n"
                                  f"{gx_output.getvalue()[-2000:]}") from exc
    docs = _docs_path(sites.get("local_site"))
    gate.record(settings, run_id.run_name, outcomes, docs, loaded)

    print(format_table(outcomes), file=out)
    blocked = sorted({o.as_of for o in outcomes if not o.success})
    n_warn = sum(len(o.warnings) for o in outcomes)
    print(f"\n{len(months)} month(s) validated: {len(months) - len(blocked)} passed, "
          f"{len(blocked)} blocked" + (f" ({', '.join(m.isoformat() for m in blocked)})" if blocked else "")
          + f"; {n_warn} warning(s). Recorded in {gate.RESULTS_TABLE} as run {run_id.run_name}.", file=out)
    if docs:
        print(f"Data Docs: {docs}", file=out)
    return not blocked


def _docs_path(url: str | None) -> str | None:
    if not url:
        return None
    return url.removeprefix("file://")
