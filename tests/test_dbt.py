"""The dbt project on a real PostgreSQL with real dbt: contracts, values, versioning.

The shared pipeline (``built``) runs on the real exports when present, else on
generated data. Tests that change data get a database of their own
(``own_db``) and load copies of the exports from a temporary folder.
"""

from __future__ import annotations

import csv
import shutil
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from streamflow.build import BuildError, dbt_build, target_dir
from streamflow.errors import StreamflowError
from streamflow.ingest import discover_months, ingest_all, ingest_month
from streamflow.marts import FEATURE_COLUMNS, KEY_COLUMNS, SOURCE_EXPORT
from streamflow.raw_schema import EXPORTS_BY_NAME, TRUE_WORDS
from streamflow.settings import Settings

KEY = list(KEY_COLUMNS)
# mart -> (export file it is built from, feature columns and types), as in docs/contracts.md
CONTRACT: dict[str, tuple[str, list[tuple[str, str]]]] = {
    mart: (SOURCE_EXPORT[mart], list(cols)) for mart, cols in FEATURE_COLUMNS.items()}
MARTS = list(CONTRACT)


# --- helpers -----------------------------------------------------------------------------------

def query(settings: Settings, text: str, params=None) -> list[tuple]:
    with psycopg.connect(settings.conninfo) as conn:
        return conn.execute(text, params).fetchall()


def snapshot(settings: Settings) -> dict[str, dict[tuple[str, date], dict]]:
    """Every mart row by (user_id, as_of): its feature values, loaded_at and xmin
    (the transaction that wrote it: unchanged xmin = the row was not rewritten)."""
    out = {}
    with psycopg.connect(settings.conninfo) as conn:
        for mart in MARTS:
            cur = conn.execute(sql.SQL("select xmin::text, * from marts.{}").format(sql.Identifier(mart)))
            names = [d.name for d in cur.description]
            rows = {}
            for row in cur.fetchall():
                rec = dict(zip(names, row, strict=True))
                key = (rec["user_id"], rec["as_of"])
                rows[key] = {
                    "xmin": rec.pop("xmin"),
                    "loaded_at": rec.pop("loaded_at"),
                    "values": tuple(rec.items()),
                }
            out[mart] = rows
    return out


def values_only(snap: dict) -> dict:
    return {mart: {k: r["values"] for k, r in rows.items()} for mart, rows in snap.items()}


def parse_cell(kind: str, cell: str):
    """A CSV cell as the marts should hold it (the loader's rules: empty = NULL)."""
    cell = cell.strip()
    if cell == "":
        return None
    return {
        "text": lambda c: c,
        "int": int,
        "float": float,
        "numeric": Decimal,
        "bool": lambda c: c.lower() in TRUE_WORDS,
        "date": date.fromisoformat,
    }[kind](cell)


def read_csv(month_dir: Path, export_name: str) -> dict[str, dict]:
    export = EXPORTS_BY_NAME[export_name]
    kinds = {c.name: c.kind for c in export.columns}
    with (month_dir / export.filename).open(encoding="utf-8-sig", newline="") as fh:
        return {row["user_id"].strip(): {k: parse_cell(kinds[k], v) for k, v in row.items()}
                for row in csv.DictReader(fh)}


def copy_seeds(seeds: Path, dest: Path) -> Path:
    shutil.copytree(seeds, dest)
    for p in dest.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)  # the real exports are read-only
    return dest


def rewrite_cell(path: Path, user_id: str, column: str, value: str) -> str:
    """Set one cell of a CSV; returns the old value."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    names = list(rows[0])
    (row,) = [r for r in rows if r["user_id"].strip() == user_id]
    old, row[column] = row[column], value
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
    return old


@pytest.fixture
def own_db(fresh_db: Settings):
    """A new empty database for one test; its dbt target folder is removed afterwards."""
    yield fresh_db
    shutil.rmtree(target_dir(fresh_db), ignore_errors=True)


@pytest.fixture(params=["generated", "real"])
def seeds(request) -> Path:
    """Generated exports always; the real ones too when present."""
    return request.getfixturevalue("sample_seeds" if request.param == "generated" else "real_seeds")


# --- the shared pipeline -----------------------------------------------------------------------

def test_marts_follow_the_contract(built: Settings):
    rows = query(built, """
        select c.table_name, c.column_name,
               case when c.data_type = 'numeric' and c.numeric_precision is not null
                    then format('numeric(%s,%s)', c.numeric_precision, c.numeric_scale)
                    else c.data_type end
        from information_schema.columns c
        join information_schema.tables t using (table_schema, table_name)
        where c.table_schema = 'marts' and t.table_type = 'BASE TABLE'
        order by c.table_name, c.ordinal_position""")
    found: dict[str, list] = {}
    for table, column, type_ in rows:
        found.setdefault(table, []).append((column, type_))
    assert found == {mart: KEY + cols for mart, (_, cols) in CONTRACT.items()}

    views = query(built, "select table_name from information_schema.views where table_schema = 'staging'")
    assert {v for (v,) in views} == {f"stg_{name}" for name in EXPORTS_BY_NAME}


def test_marts_are_analysed_and_keyed(built: Settings):
    for mart in MARTS:
        (analysed,) = query(built, "select last_analyze is not null or last_autoanalyze is not null "
                                   "from pg_stat_user_tables where schemaname = 'marts' and relname = %s",
                            (mart,))[0]
        assert analysed, f"marts.{mart} has no statistics"
        (pk,) = query(built, """
            select array_agg(a.attname::text order by k.ord)
            from pg_constraint c
            cross join lateral unnest(c.conkey) with ordinality as k(attnum, ord)
            join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.attnum
            where c.conrelid = %s::regclass and c.contype = 'p'""", (f"marts.{mart}",))[0]
        assert pk == ["user_id", "as_of"]


def test_row_counts_per_as_of_equal_the_csv_rows(built: Settings, pipeline_seeds: Path):
    months = discover_months(pipeline_seeds)
    for mart, (export, _) in CONTRACT.items():
        counts = dict(query(built, sql.SQL("select as_of, count(*) from marts.{} group by as_of")
                            .format(sql.Identifier(mart))))
        expected = {as_of: len(read_csv(folder, export)) for folder, as_of in months}
        assert counts == expected, mart


def test_every_value_equals_the_csvs(built: Settings, pipeline_seeds: Path):
    for folder, as_of in discover_months(pipeline_seeds):
        for mart, (export, cols) in CONTRACT.items():
            expected = read_csv(folder, export)
            names = [c for c, _ in cols]
            got = query(built, sql.SQL("select user_id, {} from marts.{} where as_of = %s").format(
                sql.SQL(", ").join(map(sql.Identifier, names)), sql.Identifier(mart)), (as_of,))
            assert len(got) == len(expected)
            mismatches = [
                (row[0], name, value, expected[row[0]][name])
                for row in got for name, value in zip(names, row[1:], strict=True)
                if value != expected[row[0]][name]
            ]
            assert not mismatches, f"{mart} at {as_of}: {mismatches[:5]}"


@pytest.mark.real_data
def test_known_user_in_the_real_exports(built: Settings, pipeline_seeds: Path, real_seeds: Path):
    if pipeline_seeds != real_seeds:
        pytest.skip("the shared pipeline did not run on the real exports")
    rows = query(built, """
        select s.as_of, s.months_active, s.monthly_fee, s.paperless_billing, s.contract_type,
               s.total_paid, u.watch_hours_30d
        from marts.subscriptions_profile_snapshots s
        join marts.usage_agg_30d_snapshots u using (user_id, as_of)
        where s.user_id = '7590-VHVEG' order by s.as_of""")
    assert [r[0] for r in rows] == [date(2024, 1, 31), date(2024, 2, 29)]
    for _, months_active, fee, paperless, contract, total_paid, _ in rows:
        assert (months_active, fee, paperless, contract, total_paid) == (
            1, Decimal("29.85"), True, "Month-to-month", Decimal("29.85"))
    assert rows[0][6] == 24.483650766787413
    assert rows[0][6] != rows[1][6], "watch_hours_30d tells the two months apart"


def test_event_timestamp_and_loaded_at(built: Settings):
    for mart in MARTS:
        bad = query(built, sql.SQL("""
            select m.as_of, m.event_timestamp, m.loaded_at, l.loaded_at
            from marts.{} m left join raw.ingestion_log l using (as_of)
            where m.event_timestamp <> (m.as_of::text || 'T00:00:00Z')::timestamptz
               or m.loaded_at is distinct from l.loaded_at
            limit 5""").format(sql.Identifier(mart)))
        assert not bad, f"{mart}: {bad}"


# --- versioning, on databases of their own -----------------------------------------------------

def test_redelivered_month_replaces_exactly_that_month(own_db: Settings, seeds: Path, tmp_path: Path):
    exports = copy_seeds(seeds, tmp_path / "exports")
    months = discover_months(exports)
    (first_dir, first_as_of), (_, second_as_of) = months[0], months[1]
    ingest_all(own_db, exports, quiet=True)
    dbt_build(own_db)
    before = snapshot(own_db)

    dbt_build(own_db)
    assert snapshot(own_db) == before, "a second build with no new load must change nothing"

    user = next(iter(read_csv(first_dir, "usage_agg_30d")))
    old = rewrite_cell(first_dir / "usage_agg_30d.csv", user, "watch_hours_30d", "1234.5")
    assert float(old) != 1234.5
    assert ingest_month(own_db, first_dir, first_as_of, quiet=True)
    dbt_build(own_db)
    after = snapshot(own_db)

    changed = set()
    for mart in MARTS:
        assert after[mart].keys() == before[mart].keys(), mart
        for key, row in after[mart].items():
            prev = before[mart][key]
            if key[1] == first_as_of:
                # the whole month was re-delivered: it carries its new load time
                assert row["loaded_at"] > prev["loaded_at"]
            else:
                assert row == prev, f"{mart} {key}: a month that was not re-delivered was touched"
            if row["values"] != prev["values"]:
                changed.add((mart, key))
    assert changed == {("usage_agg_30d_snapshots", (user, first_as_of))}
    new_values = dict(after["usage_agg_30d_snapshots"][(user, first_as_of)]["values"])
    assert new_values["watch_hours_30d"] == 1234.5
    assert second_as_of not in {k[1] for k in changed}


def test_late_older_month_gives_the_same_tables(own_db: Settings, seeds: Path):
    months = discover_months(seeds)
    ingest_all(own_db, seeds, quiet=True)
    dbt_build(own_db)
    natural = values_only(snapshot(own_db))

    with psycopg.connect(own_db.conninfo, autocommit=True) as conn:
        conn.execute("drop schema raw cascade")
        conn.execute("drop schema marts cascade")
    newest_first = list(reversed(months))
    ingest_month(own_db, *newest_first[0], quiet=True)
    dbt_build(own_db)
    newest = snapshot(own_db)
    for folder, as_of in newest_first[1:]:
        ingest_month(own_db, folder, as_of, quiet=True)
        dbt_build(own_db)
    late = snapshot(own_db)

    assert values_only(late) == natural
    for mart in MARTS:  # the month already there was not rewritten by the late ones
        assert {k: late[mart][k] for k in newest[mart]} == newest[mart], mart


def test_month_losing_users_or_vanishing_from_raw(own_db: Settings, sample_seeds: Path, tmp_path: Path):
    exports = copy_seeds(sample_seeds, tmp_path / "exports")
    (first_dir, first_as_of), (_, second_as_of), *_ = discover_months(exports)
    ingest_all(own_db, exports, quiet=True)
    dbt_build(own_db)
    before = snapshot(own_db)

    # month 0 re-delivered without one user: the user leaves month 0 of every mart
    gone = next(iter(read_csv(first_dir, "users")))
    for export in EXPORTS_BY_NAME.values():
        path = first_dir / export.filename
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(line for line in lines if line.split(",")[0].strip() != gone))
    ingest_month(own_db, first_dir, first_as_of, quiet=True)
    # month 1's raw rows vanish (even though raw.ingestion_log still lists the month)
    with psycopg.connect(own_db.conninfo) as conn:
        for name in EXPORTS_BY_NAME:
            conn.execute(sql.SQL("delete from raw.{} where as_of = %s").format(sql.Identifier(name)),
                         (second_as_of,))
    dbt_build(own_db)
    after = snapshot(own_db)

    for mart in MARTS:
        expected_keys = {k for k in before[mart] if k[1] != second_as_of and k != (gone, first_as_of)}
        assert after[mart].keys() == expected_keys, mart
        untouched = {k: r for k, r in before[mart].items() if k[1] not in (first_as_of, second_as_of)}
        assert untouched, "the sample has a third month"
        assert {k: after[mart][k] for k in untouched} == untouched, mart


@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Asia/Tokyo"])
def test_event_timestamp_is_utc_midnight_whatever_the_server_time_zone(
        own_db: Settings, sample_seeds: Path, tz: str):
    folder, as_of = discover_months(sample_seeds)[0]
    assert as_of == date(2024, 1, 31)
    ingest_month(own_db, folder, as_of, quiet=True)
    with psycopg.connect(own_db.conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("alter database {} set timezone = {}").format(
            sql.Identifier(own_db.database), sql.Literal(tz)))
    # a session with the database's defaults, as dbt's is
    plain = own_db.conninfo_in_zone(None)
    with psycopg.connect(plain) as conn:
        assert conn.execute("show timezone").fetchone()[0] == tz

    dbt_build(own_db)

    expected = datetime(2024, 1, 31, tzinfo=timezone.utc)
    for mart in MARTS:
        stamps = query(own_db, sql.SQL("select distinct event_timestamp from marts.{} where as_of = %s")
                       .format(sql.Identifier(mart)), (as_of,))
        assert stamps == [(expected,)], f"{mart} under {tz}: {stamps}"


# --- failures are reported -----------------------------------------------------------------------

def test_build_without_raw_data_says_what_to_do(own_db: Settings):
    with pytest.raises(StreamflowError, match="ingest"):
        dbt_build(own_db)


def test_failing_data_test_fails_the_build(own_db: Settings, sample_seeds: Path):
    folder, as_of = discover_months(sample_seeds)[0]
    ingest_month(own_db, folder, as_of, quiet=True)
    with psycopg.connect(own_db.conninfo) as conn:
        conn.execute("update raw.subscriptions set contract_type = 'Weekly' "
                     "where user_id = (select min(user_id) from raw.subscriptions)")
    with pytest.raises(BuildError, match="accepted_values_subscriptions_profile_snapshots_contract_type"):
        dbt_build(own_db)
