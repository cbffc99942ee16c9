"""The Great Expectations gate against a real PostgreSQL.

Clean data (the real exports when present, and generated data) must pass; faults
injected straight into the marts (so the gate itself is tested, not dbt) must each
fail with the right expectation named and block only their month.
"""

from __future__ import annotations

import filecmp
import io
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from streamflow.db import connect
from streamflow.errors import GateError, StreamflowError
from streamflow.settings import REPO_ROOT, Settings
from streamflow.validation import require_validated, validate, validated_months
from streamflow.validation.contract import MARTS, SUITE_NAMES, create_mart_sql
from streamflow.validation.gate import RESULTS_TABLE

COMMITTED = REPO_ROOT / "expectations" / "gx"


@pytest.fixture(scope="session")
def gx_root(tmp_path_factory) -> Path:
    """A copy of the committed GX project, so test runs leave no results or Data Docs in the repo."""
    root = tmp_path_factory.mktemp("gx_project")
    shutil.copytree(COMMITTED, root / "gx", ignore=shutil.ignore_patterns("uncommitted"))
    return root


def run(settings: Settings, gx_root: Path, as_of: date | None = None) -> tuple[bool, str]:
    out = io.StringIO()
    ok = validate(settings, as_of, project_root=gx_root, out=out)
    return ok, out.getvalue()


def latest(settings: Settings, as_of: date) -> dict[str, tuple[bool, list[str], list[tuple]]]:
    """suite -> (success, blocking expectation names, (name, where) of warnings) of the latest run."""
    with connect(settings) as conn:
        rows = conn.execute(
            f"select distinct on (suite) suite, success, blocking, warnings from {RESULTS_TABLE} "
            "where as_of = %s order by suite, validated_at desc", (as_of,)).fetchall()
    return {suite: (ok, [b["expectation"] for b in blocking], [(w["expectation"], w["where"]) for w in warns])
            for suite, ok, blocking, warns in rows}


def months_of(settings: Settings) -> list[date]:
    with connect(settings) as conn:
        return [r[0] for r in conn.execute(
            f"select distinct as_of from marts.{MARTS[0]} order by 1").fetchall()]


def copy_marts(source: Settings, dest: Settings) -> None:
    """The marts and raw.ingestion_log of ``source`` into ``dest``, as plain tables without keys:
    the gate has to catch duplicates and NULL keys whatever produced them."""
    tables = [(f"marts.{m}", create_mart_sql(m).replace(",\n    primary key (user_id, as_of)", ""))
              for m in MARTS]
    tables.append(("raw.ingestion_log", "create table raw.ingestion_log (as_of date, source_dir text, "
                   "loaded_at timestamptz, row_counts jsonb, file_sha256 jsonb)"))
    with connect(source) as src, connect(dest) as dst:
        dst.execute("create schema marts; create schema raw")
        for table, ddl in tables:
            dst.execute(ddl)
            with src.cursor().copy(f"copy {table} to stdout") as out, \
                    dst.cursor().copy(f"copy {table} from stdin") as into:
                for chunk in out:
                    into.write(chunk)
        dst.commit()


def execute(settings: Settings, statement: str, params=None) -> int:
    with connect(settings) as conn:
        count = conn.execute(statement, params).rowcount
        conn.commit()
    return count


# --- clean data passes -------------------------------------------------------------------------

def test_pipeline_data_passes(built: Settings, gx_root: Path):
    """The shared pipeline's marts (the real exports when present) pass, with the known warning."""
    ok, out = run(built, gx_root)
    months = months_of(built)
    assert ok, out
    assert validated_months(built) == months
    require_validated(built, months)
    docs = Path(out.split("Data Docs: ")[1].strip())
    assert docs.is_file() and docs.is_relative_to(gx_root)
    for month in months:
        results = latest(built, month)
        assert set(results) == set(SUITE_NAMES)
        assert all(ok for ok, _, _ in results.values())


@pytest.mark.real_data
def test_real_exports_pass_and_report_the_constant_column(built: Settings, real_seeds: Path, gx_root: Path):
    ok, out = run(built, gx_root, date(2024, 1, 31))
    assert ok, out
    warnings = latest(built, date(2024, 1, 31))["usage_agg_30d_snapshots"][2]
    # avg_session_mins_7d has one value in every real month: reported, not blocking.
    assert ("expect_column_unique_value_count_to_be_between", "avg_session_mins_7d") in warnings
    assert "warn" in out and "avg_session_mins_7d" in out


def test_generated_data_passes(fresh_db: Settings, sample_seeds: Path, gx_root: Path):
    from streamflow.build import dbt_build
    from streamflow.ingest import ingest_all

    ingest_all(fresh_db, sample_seeds)
    dbt_build(fresh_db)
    ok, out = run(fresh_db, gx_root)
    assert ok, out
    assert len(validated_months(fresh_db)) == 3


# --- faults in the marts -----------------------------------------------------------------------

FEB = date(2024, 2, 29)  # the month a fault goes into; the other month(s) must stay valid


def _some_user(s: Settings, mart: str, where: str = "true") -> str:
    with connect(s) as conn:
        return conn.execute(f"select min(user_id) from marts.{mart} where as_of = %s and {where}",
                            (FEB,)).fetchone()[0]


def set_fee(value: int):
    def inject(s: Settings) -> None:
        user = _some_user(s, "subscriptions_profile_snapshots")
        execute(s, "update marts.subscriptions_profile_snapshots set monthly_fee = %s "
                   "where as_of = %s and user_id = %s", (value, FEB, user))
    return inject


negative_fee = set_fee(-5)


def duplicate_key(s: Settings) -> None:
    execute(s, "insert into marts.usage_agg_30d_snapshots select * from marts.usage_agg_30d_snapshots "
               "where as_of = %s and user_id = %s", (FEB, _some_user(s, "usage_agg_30d_snapshots")))


def null_user_id(s: Settings) -> None:
    execute(s, "update marts.labels_snapshots set user_id = null where as_of = %s and user_id = %s",
            (FEB, _some_user(s, "labels_snapshots")))


def unknown_net_service(s: Settings) -> None:
    user = _some_user(s, "subscriptions_profile_snapshots", "net_service = 'DSL'")
    execute(s, "update marts.subscriptions_profile_snapshots set net_service = 'Satellite' "
               "where as_of = %s and user_id = %s", (FEB, user))


def fewer_usage_users(s: Settings) -> None:
    assert execute(s, "delete from marts.usage_agg_30d_snapshots where as_of = %s and user_id in "
                      "(select user_id from marts.usage_agg_30d_snapshots where as_of = %s "
                      "order by user_id limit 3)", (FEB, FEB)) == 3


def empty_mart_month(s: Settings) -> None:
    execute(s, "delete from marts.labels_snapshots where as_of = %s", (FEB,))


FAULTS = {
    # fault: (suite, expectation that must be named, where it must point)
    "negative_monthly_fee": (negative_fee, "subscriptions_profile_snapshots",
                             "expect_column_values_to_be_between", "monthly_fee", "-5"),
    "zero_monthly_fee": (set_fee(0), "subscriptions_profile_snapshots",  # the bound is strict
                         "expect_column_values_to_be_between", "monthly_fee", "0"),
    "duplicate_user_as_of": (duplicate_key, "usage_agg_30d_snapshots",
                             "expect_column_values_to_be_unique", "user_id", "(user_id, as_of) is unique"),
    "null_user_id": (null_user_id, "labels_snapshots",
                     "expect_column_values_to_not_be_null", "user_id", None),
    "unknown_net_service": (unknown_net_service, "subscriptions_profile_snapshots",
                            "expect_column_values_to_be_in_set", "net_service", "Satellite"),
    "usage_has_fewer_users": (fewer_usage_users, "month_coverage",
                              "expect_column_pair_values_to_be_equal",
                              "usage_agg_30d_snapshots_users, user_profile_snapshots_users", None),
    "mart_empty_for_the_month": (empty_mart_month, "labels_snapshots",
                                 "expect_table_row_count_to_be_between", None, "observed 0"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_blocks_its_month_and_names_the_expectation(
        fault: str, built: Settings, fresh_db: Settings, gx_root: Path):
    inject, suite, expectation, where, shown = FAULTS[fault]
    copy_marts(built, fresh_db)
    months = months_of(fresh_db)
    assert FEB in months and len(months) >= 2
    inject(fresh_db)

    ok, out = run(fresh_db, gx_root)

    assert not ok, out
    results = latest(fresh_db, FEB)
    success, blocking, _ = results[suite]
    assert not success and expectation in blocking, (suite, results[suite], out)
    failing_line = next(line for line in out.splitlines() if f"FAIL    {expectation}" in line)
    if where:
        assert f"{expectation}({where})" in failing_line
    if shown:
        assert shown in failing_line
    others = [m for m in months if m != FEB]
    assert validated_months(fresh_db) == others
    require_validated(fresh_db, others)
    with pytest.raises(GateError) as err:
        require_validated(fresh_db, [FEB, *others])
    message = str(err.value)
    assert "2024-02-29 failed validation" in message and suite in message
    assert "make validate AS_OF=2024-02-29" in message
    assert all(m.isoformat() not in message for m in others)


def test_month_ingested_but_absent_from_every_mart_fails(built: Settings, fresh_db: Settings, gx_root: Path):
    """The empty month: in raw.ingestion_log, no row in any mart; per-row checks alone would pass."""
    copy_marts(built, fresh_db)
    empty = date(2024, 3, 31)
    execute(fresh_db, "insert into raw.ingestion_log values (%s, 'month_002', now(), '{}', '{}')", (empty,))

    ok, out = run(fresh_db, gx_root)

    assert not ok
    results = latest(fresh_db, empty)
    assert set(results) == set(SUITE_NAMES)
    for mart in MARTS:
        assert results[mart][1] == ["expect_table_row_count_to_be_between"], results[mart]
    # The coverage batch exists (from the log) and names every empty mart.
    assert results["month_coverage"][1] == ["expect_column_values_to_be_between"] * len(MARTS)
    assert validated_months(fresh_db) == months_of(fresh_db)
    with pytest.raises(GateError, match="2024-03-31 failed validation"):
        require_validated(fresh_db, [empty])


def test_fixing_the_data_and_revalidating_lifts_the_block(built: Settings, fresh_db: Settings, gx_root: Path):
    copy_marts(built, fresh_db)
    negative_fee(fresh_db)
    assert not run(fresh_db, gx_root, FEB)[0]
    assert FEB not in validated_months(fresh_db)
    execute(fresh_db, "update marts.subscriptions_profile_snapshots set monthly_fee = 5 "
                      "where monthly_fee < 0")
    ok, out = run(fresh_db, gx_root, FEB)
    assert ok, out
    assert FEB in validated_months(fresh_db)  # the latest result counts


# --- the gate without GX -----------------------------------------------------------------------

def test_never_validated_and_reingested_months_are_refused(
        built: Settings, fresh_db: Settings, gx_root: Path):
    copy_marts(built, fresh_db)
    assert validated_months(fresh_db) == []
    with pytest.raises(GateError, match="2024-02-29 never validated: run `make validate AS_OF=2024-02-29`"):
        require_validated(fresh_db, [FEB])
    require_validated(fresh_db, [])  # nothing asked, nothing refused

    assert run(fresh_db, gx_root, FEB)[0]
    require_validated(fresh_db, [FEB])
    # A re-ingested month is new data: its old pass no longer counts.
    execute(fresh_db, "update raw.ingestion_log set loaded_at = loaded_at + interval '1 minute' "
                      "where as_of = %s", (FEB,))
    assert FEB not in validated_months(fresh_db)
    with pytest.raises(GateError, match="validated on data older than its latest load"):
        require_validated(fresh_db, [FEB])


def test_validating_before_the_build_does_not_count(built: Settings, fresh_db: Settings, gx_root: Path):
    """ingest -> validate -> build: the pass was on the old marts, so it must not cover the new load."""
    copy_marts(built, fresh_db)
    execute(fresh_db, "update raw.ingestion_log set loaded_at = loaded_at + interval '1 minute' "
                      "where as_of = %s", (FEB,))  # re-ingested; marts not rebuilt yet
    ok, out = run(fresh_db, gx_root, FEB)
    assert ok, out  # the old marts are fine in themselves
    assert FEB not in validated_months(fresh_db)
    with pytest.raises(GateError) as err:
        require_validated(fresh_db, [FEB])
    assert "run `make build` then `make validate AS_OF=2024-02-29`" in str(err.value)
    # The marts rebuilt from the new load, then validated: now it counts.
    for mart in MARTS:
        execute(fresh_db, f"update marts.{mart} set loaded_at = "
                          "(select loaded_at from raw.ingestion_log where as_of = %s) where as_of = %s",
                (FEB, FEB))
    assert FEB not in validated_months(fresh_db)  # the rebuild itself is not validated
    assert run(fresh_db, gx_root, FEB)[0]
    assert FEB in validated_months(fresh_db)


def test_downstream_steps_refuse_or_name_every_month_they_leave_out(
        built: Settings, fresh_db: Settings, gx_root: Path):
    from streamflow.features.materialize import materialize
    from streamflow.features.training import build_training_set

    copy_marts(built, fresh_db)
    unvalidated = date(2024, 3, 31)
    execute(fresh_db, "insert into raw.ingestion_log values (%s, 'month_002', now(), '{}', '{}')",
            (unvalidated,))
    negative_fee(fresh_db)
    assert not run(fresh_db, gx_root, FEB)[0]

    notes = io.StringIO()
    assert FEB not in validated_months(fresh_db, out=notes)
    said = notes.getvalue()
    assert "leaving out month 2024-02-29 failed validation: subscriptions_profile_snapshots" in said
    assert "leaving out month 2024-03-31 never validated" in said
    # Asked for explicitly, the month is refused before anything is read or written.
    for step in (build_training_set, materialize):
        with pytest.raises(GateError) as err:
            step(fresh_db, as_of=FEB)
        assert "month 2024-02-29 failed validation" in str(err.value)
        assert "run `make validate AS_OF=2024-02-29` to see why" in str(err.value)


def test_months_no_longer_loaded_are_not_candidates(built: Settings, fresh_db: Settings, gx_root: Path):
    copy_marts(built, fresh_db)
    negative_fee(fresh_db)
    assert not run(fresh_db, gx_root)[0]  # every month: FEB fails, the others pass
    with pytest.raises(StreamflowError, match="2099-01-31 is neither loaded nor in the marts"):
        run(fresh_db, gx_root, date(2099, 1, 31))
    with connect(fresh_db) as conn:
        recorded = f"select count(*) from {RESULTS_TABLE} where as_of = '2099-01-31'"
        assert conn.execute(recorded).fetchone()[0] == 0

    # The failed month is withdrawn (gone from raw.ingestion_log): no longer named as failing.
    execute(fresh_db, "delete from raw.ingestion_log where as_of = %s", (FEB,))
    notes = io.StringIO()
    months = validated_months(fresh_db, out=notes)
    assert FEB not in months and months
    assert "2024-02-29" not in notes.getvalue()


def test_validate_without_marts_says_what_to_do(fresh_db: Settings, gx_root: Path):
    with pytest.raises(StreamflowError, match="run `make build` first"):
        run(fresh_db, gx_root)


def test_gate_functions_do_not_import_great_expectations():
    code = ("import sys, streamflow.validation as v; v.validated_months; "
            "print('great_expectations' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- the committed project and the command line ------------------------------------------------

def test_committed_suites_are_what_the_code_generates(tmp_path: Path):
    """Suites live in code; the JSON in git must be exactly what syncing the code writes."""
    from streamflow.validation import project

    shutil.copytree(COMMITTED, tmp_path / "gx", ignore=shutil.ignore_patterns("uncommitted"))
    with project.quiet_gx():
        project.sync(project.get_context(tmp_path))
    for sub in ("expectations", "validation_definitions", "checkpoints"):
        names = sorted(p.name for p in (COMMITTED / sub).glob("*.json"))
        assert names == sorted(f"{s}.json" for s in SUITE_NAMES)
        match, mismatch, errors = filecmp.cmpfiles(COMMITTED / sub, tmp_path / "gx" / sub, names,
                                                   shallow=False)
        assert not mismatch and not errors, f"regenerate and commit expectations/gx/{sub}: {mismatch}"
    assert filecmp.cmp(COMMITTED / "great_expectations.yml", tmp_path / "gx" / "great_expectations.yml",
                       shallow=False)


def test_cli_exits_non_zero_on_a_blocking_failure(built: Settings, fresh_db: Settings):
    copy_marts(built, fresh_db)
    unknown_net_service(fresh_db)
    env = {**os.environ, **fresh_db.env()}
    cli = Path(sys.executable).with_name("streamflow")
    bad = subprocess.run([cli, "validate", "--as-of", "2024-02-29"], env=env, capture_output=True, text=True)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "expect_column_values_to_be_in_set(net_service)" in bad.stdout
    assert "Data Docs: " in bad.stdout
    good = subprocess.run([cli, "validate", "--as-of", "2024-01-31"], env=env, capture_output=True, text=True)
    assert good.returncode == 0, good.stdout + good.stderr
    # Quiet: the table and the summary, not GX's progress bars or warnings.
    assert len(good.stdout.splitlines()) <= len(SUITE_NAMES) + 6
    assert good.stderr == ""
