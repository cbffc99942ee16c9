"""The GX file project in ``expectations/``: context, datasource, assets, suites, checkpoints.

Everything is declared here and synced idempotently on every run: unchanged
objects keep their ids, so the committed files only change when this code does.
The connection string holds ``${POSTGRES_*}`` placeholders that GX resolves from
the environment, which :func:`settings_env` fills from the run's ``Settings``:
no credentials in the repo, and the same settings as dbt and Feast.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from streamflow.settings import REPO_ROOT, Settings
from streamflow.validation.contract import COVERAGE_SUITE, MARTS, MARTS_SCHEMA

PROJECT_ROOT = REPO_ROOT / "expectations"
DATASOURCE = "streamflow_marts"
BATCH_DEFINITION = "per_as_of"
# The session time zone is pinned to UTC, as in Settings.conninfo. The password goes
# into a URL, so GX gets it percent-encoded (settings_env): any character works.
CONNECTION_STRING = (
    "postgresql+psycopg://${POSTGRES_USER}:${POSTGRES_PASSWORD_URLENCODED}@${POSTGRES_HOST}:${POSTGRES_PORT}"
    "/${POSTGRES_DB}?options=-c%20timezone%3DUTC"
)
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 5}
# Validation results kept on disk (per suite) for Data Docs. Rebuilding the docs index
# reads every stored result, so an unbounded history makes each run slower; the
# durable record of every run is quality.validation_results.
KEEP_RUNS = 10


def coverage_query() -> str:
    """Rows and distinct users per mart for every month known to raw.ingestion_log or any mart.

    A month ingested but absent from a mart gets a row of zeros here (a mart alone
    cannot produce a batch for it).
    """
    months = "\n    union ".join(
        ["select as_of from raw.ingestion_log"]
        + [f"select as_of from {MARTS_SCHEMA}.{m}" for m in MARTS])
    counts = ",\n  ".join(
        f"coalesce({m}.n_rows, 0) as {m}_rows, coalesce({m}.n_users, 0) as {m}_users" for m in MARTS)
    joins = "\n".join(
        f"left join (select as_of, count(*) as n_rows, count(distinct user_id) as n_users "
        f"from {MARTS_SCHEMA}.{m} group by as_of) {m} using (as_of)" for m in MARTS)
    return f"select months.as_of,\n  {counts}\nfrom (\n    {months}\n) months\n{joins}"


@contextlib.contextmanager
def settings_env(settings: Settings) -> Iterator[None]:
    """Expose ``settings`` to GX's ``${VAR}`` substitution for the duration of a run."""
    env = {**settings.env(), "POSTGRES_PASSWORD_URLENCODED": quote(settings.password, safe="")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def quiet_gx() -> Iterator[io.StringIO]:
    """Silence GX's progress bars, prints, warnings and INFO logs; yields what it printed."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no network calls from a gate
    buffer = io.StringIO()
    logger = logging.getLogger("great_expectations")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buffer), \
                contextlib.redirect_stderr(buffer):
            warnings.simplefilter("ignore")
            yield buffer
    finally:
        logger.setLevel(level)


def get_context(project_root: Path = PROJECT_ROOT):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(project_root))
    if context.variables.progress_bars != ProgressBarsConfig(globally=False):
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.variables.save()
    if context.variables.analytics_enabled is not False:
        context.variables.analytics_enabled = False
        context.variables.save()
    return context


def _sync_datasource(context):
    """The datasource with one asset per mart and the coverage query, each batched per as_of day."""
    try:
        ds = context.data_sources.get(DATASOURCE)
    except (KeyError, ValueError, LookupError):
        ds = None
    if ds is None or getattr(ds.connection_string, "template_str", ds.connection_string) != CONNECTION_STRING:
        ds = context.data_sources.add_or_update_postgres(DATASOURCE, connection_string=CONNECTION_STRING)
    wanted = {m: ("table", m) for m in MARTS}
    wanted[COVERAGE_SUITE] = ("query", coverage_query())
    for name, (kind, what) in wanted.items():
        asset = next((a for a in ds.assets if a.name == name), None)
        current = None if asset is None else (
            ("table", asset.table_name) if asset.type == "table" else ("query", asset.query))
        if current != (kind, what):
            if asset is not None:
                ds.delete_asset(name)
            asset = (ds.add_table_asset(name, table_name=what, schema_name=MARTS_SCHEMA)
                     if kind == "table" else ds.add_query_asset(name, query=what))
        if not any(bd.name == BATCH_DEFINITION for bd in asset.batch_definitions):
            # Daily: exactly one as_of per batch, whatever day of the month it falls on.
            asset.add_batch_definition_daily(BATCH_DEFINITION, column="as_of", validate_batchable=False)
    return ds


def _sync_suite(context, suite):
    """add_or_update, but keep the ids of unchanged expectations and skip the write if nothing changed.

    GX compares expectations including their ids, so a suite rebuilt in code would
    otherwise get fresh ids (and a diff in the committed JSON) on every run.
    """
    from great_expectations.exceptions import DataContextError

    try:
        existing = context.suites.get(suite.name)
    except DataContextError:
        return context.suites.add(suite)
    pool = list(existing.expectations)
    for expectation in suite.expectations:
        for candidate in pool:
            expectation.id = candidate.id
            if expectation == candidate:
                pool.remove(candidate)
                break
            expectation.id = None
    if suite.expectations == existing.expectations:
        return existing
    return context.suites.add_or_update(suite)


def sync(context) -> dict:
    """Declare the datasource, suites, validation definitions and checkpoints; name -> checkpoint."""
    import great_expectations as gx
    from great_expectations.exceptions import DataContextError

    from streamflow.validation.suites import build_suites

    ds = _sync_datasource(context)
    checkpoints = {}
    for suite in build_suites():
        suite = _sync_suite(context, suite)
        batch_definition = ds.get_asset(suite.name).get_batch_definition(BATCH_DEFINITION)
        try:
            vd = context.validation_definitions.get(suite.name)
            current = vd.suite.name == suite.name and vd.data.id == batch_definition.id
        except DataContextError:
            current = False
        if not current:
            vd = context.validation_definitions.add_or_update(
                gx.ValidationDefinition(name=suite.name, data=batch_definition, suite=suite))
        try:
            checkpoint = context.checkpoints.get(suite.name)
            current = (checkpoint.result_format == RESULT_FORMAT and not checkpoint.actions
                       and [v.name for v in checkpoint.validation_definitions] == [suite.name])
        except DataContextError:
            current = False
        if not current:
            checkpoint = context.checkpoints.add_or_update(gx.Checkpoint(
                name=suite.name, validation_definitions=[vd], result_format=RESULT_FORMAT, actions=[]))
        checkpoints[suite.name] = checkpoint
    return checkpoints


def prune_results(project_root: Path = PROJECT_ROOT, keep: int = KEEP_RUNS) -> None:
    """Delete stored validation results of all but the ``keep`` latest runs of each suite."""
    import shutil

    validations = project_root / "gx" / "uncommitted" / "validations"
    if not validations.is_dir():
        return
    for suite_dir in (d for d in validations.iterdir() if d.is_dir()):
        # Run names are "validate-<UTC timestamp>", so name order is time order.
        runs = sorted(d for d in suite_dir.iterdir() if d.is_dir())
        for old in runs[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
