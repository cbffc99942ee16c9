"""Ingestion against a real PostgreSQL: real exports, generated data, and bad input
that must be refused with file/line/column/value and leave the database unchanged."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from streamflow.db import connect
from streamflow.errors import IngestError
from streamflow.ingest import discover_months, ingest_all, ingest_month
from streamflow.raw_schema import EXPORT_FILES

JAN, FEB = date(2024, 1, 31), date(2024, 2, 29)


def raw_fingerprint(settings, with_loaded_at: bool = True) -> dict:
    """Row count and an md5 of the ordered rows, per raw table and month."""
    out = {}
    with connect(settings) as conn:
        for export in EXPORT_FILES:
            cols = ", ".join((["loaded_at"] if with_loaded_at else []) + export.column_names)
            rows = conn.execute(
                f"select as_of, count(*), md5(string_agg(row({cols})::text, '|' order by user_id)) "
                f"from raw.{export.name} group by as_of order by as_of").fetchall()
            for as_of, n, digest in rows:
                out[(export.name, as_of)] = (n, digest)
    return out


@pytest.fixture(scope="module")
def month_source(tmp_path_factory) -> Path:
    """A month folder to corrupt: the real month_000 when present, else a generated one."""
    from streamflow.settings import REAL_EXPORTS_DIR

    if (REAL_EXPORTS_DIR / "month_000").is_dir():
        return REAL_EXPORTS_DIR / "month_000"
    from streamflow.generate import generate

    out = tmp_path_factory.mktemp("month_source")
    return generate(out, users=300, months=1, seed=3, progress=False)[0]


@pytest.fixture(scope="module")
def loaded_db(pg_server, tmp_path_factory, month_source):
    """A database holding two good months, shared by the bad-input tests (which must not change it)."""
    from conftest import recreate_database

    s = recreate_database(pg_server, f"{pg_server.database}_ingest")
    ingest_month(s, month_source, JAN, quiet=True)
    ingest_month(s, month_source, FEB, quiet=True)
    return s


def test_real_exports_load_7043_rows_per_file_per_month(real_seeds, fresh_db):
    months = ingest_all(fresh_db, real_seeds, quiet=True)
    assert months == [JAN, FEB]
    fp = raw_fingerprint(fresh_db)
    for export in EXPORT_FILES:
        for as_of in months:
            assert fp[(export.name, as_of)][0] == 7043, (export.name, as_of)
    with connect(fresh_db) as conn:
        nulls = conn.execute("select count(*) from raw.subscriptions where plan_stream_tv is null "
                             "and as_of = %s", (JAN,)).fetchone()[0]
        assert nulls == 1526  # empty cells are NULL, never False
        row = conn.execute("select months_active, monthly_fee, paperless_billing, total_paid from "
                           "raw.subscriptions where user_id = '7590-VHVEG' and as_of = %s", (JAN,)).fetchone()
        assert row[0] == 1 and str(row[1]) == "29.85" and row[2] is True and str(row[3]) == "29.85"


def test_generated_data_loads_with_the_documented_as_of(sample_seeds, fresh_db):
    months = ingest_all(fresh_db, sample_seeds, quiet=True)
    assert months == [JAN, FEB, date(2024, 3, 31)]
    fp = raw_fingerprint(fresh_db)
    assert {fp[(e.name, m)][0] for e in EXPORT_FILES for m in months} == {400}


def test_month_folders_map_to_month_ends_without_a_manifest(tmp_path):
    for n in (0, 1, 2, 13):
        (tmp_path / f"month_{n:03d}").mkdir()
    assert [a for _, a in discover_months(tmp_path)] == [
        JAN, FEB, date(2024, 3, 31), date(2025, 2, 28)]


def test_manifest_giving_two_folders_one_as_of_is_refused(tmp_path):
    for n in (0, 1):
        (tmp_path / f"month_{n:03d}").mkdir()
    (tmp_path / "as_of.csv").write_text("folder,as_of\nmonth_000,2024-01-31\nmonth_001,2024-01-31\n")
    with pytest.raises(IngestError, match="as_of.csv.*2024-01-31.*same as_of"):
        discover_months(tmp_path)


def test_as_of_that_is_not_a_month_end_is_refused(loaded_db, month_source):
    before = raw_fingerprint(loaded_db)
    with pytest.raises(IngestError, match="2024-02-15 is not a month-end.*2024-02-29"):
        ingest_month(loaded_db, month_source, date(2024, 2, 15), quiet=True)
    assert raw_fingerprint(loaded_db) == before


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit(path: Path, fn) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(fn(lines)) + "\n")


def _set_cell(path: Path, line_no: int, column: str, value: str) -> None:
    def fn(lines):
        header = lines[0].split(",")
        cells = lines[line_no - 1].split(",")
        cells[header.index(column)] = value
        lines[line_no - 1] = ",".join(cells)
        return lines
    _edit(path, fn)


BAD_INPUTS = {
    "missing file": (lambda d: (d / "labels.csv").unlink(), ["labels.csv", "missing file"]),
    "missing column": (
        lambda d: _edit(d / "payments_agg_90d.csv", lambda ls: [ln.split(",")[0] for ln in ls]),
        ["payments_agg_90d.csv", "line 1", "missing column(s) failed_payments_90d"]),
    "unexpected column": (
        lambda d: _edit(d / "labels.csv", lambda ls: [ls[0] + ",extra"] + [x + ",1" for x in ls[1:]]),
        ["labels.csv", "line 1", "unexpected column(s) extra"]),
    "row with a missing field": (
        lambda d: _edit(d / "subscriptions.csv", lambda ls: ls[:5] + [ls[5].rsplit(",", 1)[0]] + ls[6:]),
        ["subscriptions.csv", "line 6", "8 fields where the header has 9"]),
    "header only": (lambda d: _edit(d / "support_agg_90d.csv", lambda ls: ls[:1]),
                    ["support_agg_90d.csv", "header only"]),
    "abc in monthly_fee": (lambda d: _set_cell(d / "subscriptions.csv", 5, "monthly_fee", "abc"),
                           ["subscriptions.csv", "line 5", "column 'monthly_fee'", "'abc'", "number"]),
    "european decimal": (lambda d: _set_cell(d / "subscriptions.csv", 7, "total_paid", '"1.234,56"'),
                         ["subscriptions.csv", "line 7", "column 'total_paid'", "'1.234,56'"]),
    "int with decimals": (lambda d: _set_cell(d / "usage_agg_30d.csv", 3, "skips_7d", "2.5"),
                          ["usage_agg_30d.csv", "line 3", "column 'skips_7d'", "'2.5'", "whole number"]),
    "bad boolean": (lambda d: _set_cell(d / "labels.csv", 4, "churn_label", "maybe"),
                    ["labels.csv", "line 4", "column 'churn_label'", "'maybe'", "boolean"]),
    "bad date": (lambda d: _set_cell(d / "users.csv", 6, "signup_date", "2022-02-30"),
                 ["users.csv", "line 6", "column 'signup_date'", "'2022-02-30'", "date"]),
    "empty user_id": (lambda d: _set_cell(d / "usage_agg_30d.csv", 9, "user_id", ""),
                      ["usage_agg_30d.csv", "line 9", "column 'user_id'", "empty"]),
    "whitespace user_id": (lambda d: _set_cell(d / "users.csv", 2, "user_id", "   "),
                           ["users.csv", "line 2", "column 'user_id'", "empty"]),
    "duplicate user_id": (
        lambda d: _edit(d / "labels.csv", lambda ls: ls + [ls[3]]),
        ["labels.csv", "column 'user_id'", "duplicate user_id (first seen on line 4)"]),
    "number too large for numeric(10,2)": (
        lambda d: _set_cell(d / "subscriptions.csv", 5, "monthly_fee", "1e20"),
        ["subscriptions.csv", "line 5", "column 'monthly_fee'", "'1e20'", "too large"]),
    "double overflows": (lambda d: _set_cell(d / "usage_agg_30d.csv", 4, "watch_hours_30d", "1e400"),
                         ["usage_agg_30d.csv", "line 4", "column 'watch_hours_30d'", "out of range"]),
    "double underflows": (lambda d: _set_cell(d / "usage_agg_30d.csv", 6, "watch_hours_30d", "1e-400"),
                          ["usage_agg_30d.csv", "line 6", "column 'watch_hours_30d'", "out of range"]),
    "NUL in text": (lambda d: _set_cell(d / "users.csv", 3, "user_gender", "Fe\x00male"),
                    ["users.csv", "line 3", "column 'user_gender'", "NUL"]),
    "user_id outside the served pattern": (
        lambda d: _set_cell(d / "users.csv", 3, "user_id", "José Ü"),
        ["users.csv", "line 3", "column 'user_id'", "'José Ü'", "must match"]),
    "blank lines count as lines": (  # two blank lines before the bad cell: it is on line 12, not 10
        lambda d: _edit(d / "subscriptions.csv", lambda ls: ls[:3] + ["", ""] + ls[3:])
        or _set_cell(d / "subscriptions.csv", 12, "months_active", "x"),
        ["subscriptions.csv", "line 12", "column 'months_active'", "'x'"]),
    "non-UTF-8 byte": (
        lambda d: (d / "labels.csv").write_bytes(
            b"\n".join(ln + (b"\xff" if i == 4 else b"") for i, ln in
                       enumerate((d / "labels.csv").read_bytes().split(b"\n"), start=1))),
        ["labels.csv", "line 4", "not UTF-8"]),
    "unbalanced quote": (lambda d: _set_cell(d / "subscriptions.csv", 5, "contract_type", '"One year'),
                         ["subscriptions.csv", "line 5", "unbalanced quote"]),
    "user not in users.csv": (
        lambda d: _set_cell(d / "support_agg_90d.csv", 8, "user_id", "0000-NOONE"),
        ["support_agg_90d.csv", "line 8", "column 'user_id'", "'0000-NOONE'",
         "not in this month's users.csv"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_and_changes_nothing(case, loaded_db, month_source, tmp_path):
    corrupt, expected = BAD_INPUTS[case]
    folder = _copy(month_source, tmp_path / "month_000")
    corrupt(folder)
    before = raw_fingerprint(loaded_db)
    with pytest.raises(IngestError) as err:
        ingest_month(loaded_db, folder, JAN, quiet=True)
    message = str(err.value)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert raw_fingerprint(loaded_db) == before


def test_cli_exits_nonzero_with_a_message_and_no_traceback(loaded_db, month_source, tmp_path):
    folder = _copy(month_source, tmp_path / "month_000")
    _set_cell(folder / "subscriptions.csv", 5, "monthly_fee", "abc")
    before = raw_fingerprint(loaded_db)
    env_cmd = [sys.executable, "-m", "streamflow.cli", "ingest", str(folder), "--as-of"]
    import os

    env = {**os.environ, **loaded_db.env()}
    bad = subprocess.run(env_cmd + ["2024-01-31"], capture_output=True, text=True, env=env)
    assert bad.returncode != 0
    assert "subscriptions.csv, line 5, column 'monthly_fee', value 'abc'" in bad.stderr
    assert "Traceback" not in bad.stderr
    not_a_date = subprocess.run(env_cmd + ["2024-13-45"], capture_output=True, text=True, env=env)
    assert not_a_date.returncode != 0 and "not a date" in not_a_date.stderr
    assert raw_fingerprint(loaded_db) == before


def test_reingesting_a_month_twice_leaves_identical_tables(fresh_db, month_source):
    ingest_month(fresh_db, month_source, JAN, quiet=True)
    first = raw_fingerprint(fresh_db)
    assert ingest_month(fresh_db, month_source, JAN, quiet=True) is False  # unchanged: no-op
    assert raw_fingerprint(fresh_db) == first


def test_reingesting_a_changed_month_replaces_only_that_month(fresh_db, month_source, tmp_path):
    ingest_month(fresh_db, month_source, JAN, quiet=True)
    ingest_month(fresh_db, month_source, FEB, quiet=True)
    before = raw_fingerprint(fresh_db)
    folder = _copy(month_source, tmp_path / "month_001")
    _set_cell(folder / "payments_agg_90d.csv", 2, "failed_payments_90d", "7")
    assert ingest_month(fresh_db, folder, FEB, quiet=True) is True
    after = raw_fingerprint(fresh_db)
    assert {k: v for k, v in after.items() if k[1] == JAN} == {k: v for k, v in before.items() if k[1] == JAN}
    changed = {k for k in after if after[k] != before[k]}
    # Every Feb table gets the new load time; only payments changes in content.
    assert changed == {(e.name, FEB) for e in EXPORT_FILES}
    content_before = raw_fingerprint(fresh_db, with_loaded_at=False)
    assert content_before[("payments_agg_90d", FEB)] != content_before[("payments_agg_90d", JAN)]
    with connect(fresh_db) as conn:
        assert conn.execute("select count(*) from raw.payments_agg_90d where as_of = %s and "
                            "failed_payments_90d = 7", (FEB,)).fetchone()[0] == 1


def test_bom_and_crlf_copy_loads_identically(pg_server, month_source, tmp_path):
    from conftest import recreate_database

    folder = _copy(month_source, tmp_path / "month_000")
    for f in folder.glob("*.csv"):
        f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes().replace(b"\n", b"\r\n"))
    clean = recreate_database(pg_server, f"{pg_server.database}_bom_a")
    bom = recreate_database(pg_server, f"{pg_server.database}_bom_b")
    ingest_month(clean, month_source, JAN, quiet=True)
    ingest_month(bom, folder, JAN, quiet=True)
    assert raw_fingerprint(clean, with_loaded_at=False) == raw_fingerprint(bom, with_loaded_at=False)
    # and into the database that already has the clean month it is recognised as the same data
    assert ingest_month(clean, folder, JAN, quiet=True) is False


def test_user_ids_stay_text_leading_zeros_kept_spaces_stripped(fresh_db, month_source, tmp_path):
    folder = _copy(month_source, tmp_path / "month_000")
    for f in folder.glob("*.csv"):
        _edit(f, lambda ls: ls + [" 0042-ZEROS ," + ",".join(ls[1].split(",")[1:])])
    ingest_month(fresh_db, folder, JAN, quiet=True)
    with connect(fresh_db) as conn:
        ids = {r[0] for r in conn.execute("select user_id from raw.labels where user_id like '%ZEROS%'")}
    assert ids == {"0042-ZEROS"}
