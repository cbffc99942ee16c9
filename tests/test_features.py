"""Feast layer on the real pipeline (ingest -> dbt -> GX gate -> apply -> materialize), real PostgreSQL."""

from __future__ import annotations

import csv
import math
from datetime import date
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from psycopg import sql

from streamflow.errors import StreamflowError
from streamflow.features import FEATURE_SERVICE
from streamflow.features import serialization as ser

pytestmark = pytest.mark.filterwarnings("ignore")

JAN, FEB = date(2024, 1, 31), date(2024, 2, 29)
NON_FEATURES = {"user_id", "as_of", "event_timestamp", "loaded_at"}


def _csv(seeds: Path, month: str, stem: str) -> dict[str, dict[str, str]]:
    with open(seeds / month / f"{stem}.csv", newline="") as f:
        return {row["user_id"].strip(): row for row in csv.DictReader(f)}


def _online_snapshot(settings) -> dict[str, list[tuple]]:
    from streamflow.features.store import get_store

    out = {}
    with psycopg.connect(settings.conninfo) as conn:
        for fv in get_store(settings).list_feature_views():
            query = sql.SQL(
                "select entity_key, feature_name, value, value_text, event_ts, created_ts from {} "
                "order by entity_key, feature_name").format(sql.Identifier(*ser.online_table(fv.name)))
            out[fv.name] = conn.execute(query).fetchall()
    return out


@pytest.fixture(scope="module")
def store(materialized):
    from streamflow.features.store import get_store

    return get_store(materialized)


@pytest.fixture(scope="module")
def training(materialized, tmp_path_factory):
    from streamflow.features.training import build_training_set

    path = build_training_set(materialized, out_dir=tmp_path_factory.mktemp("training"))
    return pd.read_parquet(path.with_suffix(".parquet"))


# ------------------------------------------------------------------ definitions vs the dbt contract

def test_feature_views_match_the_dbt_contract(applied):
    """Every Feast field has the name and (Feast-mapped) type of a mart column, and every mart
    feature column is a field: checked against dbt's manifest and against the built tables."""
    from feast.type_map import pg_type_to_feast_value_type

    from streamflow.features.manifest import load_manifest, mart_relation
    from streamflow.features.store import load_repo

    manifest = load_manifest()
    repo = load_repo()
    assert {fv.name for fv in repo.feature_views} == {
        "user_profile_fv", "subs_profile_fv", "usage_agg_30d_fv", "payments_agg_90d_fv", "support_agg_90d_fv"}
    with psycopg.connect(applied.conninfo) as conn:
        for fv in repo.feature_views:
            model = fv.batch_source.tags["dbt_model"]
            rel = mart_relation(model, manifest)
            assert rel.sql in fv.batch_source.get_table_query_string(), "source must read dbt's relation"
            built = dict(conn.execute(
                "select column_name, data_type from information_schema.columns "
                "where table_schema = %s and table_name = %s", (rel.schema, rel.identifier)).fetchall())
            assert built, f"{rel.sql} not built"
            fields = {f.name: f.dtype.to_value_type() for f in fv.features}
            assert set(fields) == set(built) - NON_FEATURES, fv.name
            declared = {c: t for c, t in rel.columns.items() if t}
            if declared:
                assert set(fields) == set(declared) - NON_FEATURES, fv.name
            for name, vtype in fields.items():
                pg_type = built[name]
                assert pg_type_to_feast_value_type(pg_type) == vtype, \
                    f"{fv.name}.{name}: {pg_type} vs {vtype}"
                if name in declared:
                    base = declared[name].split("(")[0].strip()
                    assert pg_type_to_feast_value_type(base) == vtype, \
                        f"{fv.name}.{name}: dbt {declared[name]}"
            assert fv.description and fv.owner and fv.tags
            assert fv.batch_source.timestamp_field == "event_timestamp"
            assert fv.batch_source.created_timestamp_column == "loaded_at"
    assert built["event_timestamp"] == "timestamp with time zone"
    services = {s.name: s for s in repo.feature_services}
    assert {p.name for p in services[FEATURE_SERVICE].feature_view_projections} == {
        fv.name for fv in repo.feature_views}


def test_ttl_covers_one_month_and_not_two(applied):
    from streamflow.features.store import load_repo

    for fv in load_repo().feature_views:
        assert 31 <= fv.ttl.days < 28 + 28, fv.name  # serves until the next month-end, never two back


# ------------------------------------------------------------------ point in time

@pytest.mark.real_data
def test_training_rows_get_their_own_months_values(training, real_seeds):
    jan, feb = _csv(real_seeds, "month_000", "usage_agg_30d"), _csv(real_seeds, "month_001", "usage_agg_30d")
    labels = [_csv(real_seeds, m, "labels") for m in ("month_000", "month_001")]
    assert len(training) == sum(len(x) for x in labels) == 14086  # one row per label row
    assert not training.duplicated(["user_id", "event_timestamp"]).any()
    assert training.equals(training.sort_values(["event_timestamp", "user_id"]).reset_index(drop=True))
    checked = 0
    for user in sorted(jan)[:: len(jan) // 12]:
        if jan[user]["watch_hours_30d"] == feb[user]["watch_hours_30d"]:
            continue
        rows = training[training.user_id == user]
        rows = rows.set_index(rows.event_timestamp.dt.date)
        assert rows.at[JAN, "watch_hours_30d"] == float(jan[user]["watch_hours_30d"])
        assert rows.at[FEB, "watch_hours_30d"] == float(feb[user]["watch_hours_30d"])
        checked += 1
    assert checked >= 8


def _pit(settings, user_ids: list[str], ts: str) -> pd.DataFrame:
    from streamflow.features.training import historical_features

    values = ", ".join(f"('{u}', '{ts}'::timestamptz)" for u in user_ids)
    return historical_features(settings, f"select * from (values {values}) e(user_id, event_timestamp)")


@pytest.mark.real_data
def test_between_months_gets_the_earlier_month_and_before_the_first_gets_nulls(materialized, real_seeds):
    jan = _csv(real_seeds, "month_000", "usage_agg_30d")
    users = sorted(jan)[:25]
    mid = _pit(materialized, users, "2024-02-15T12:00:00+00:00").set_index("user_id")
    for u in users:
        assert mid.at[u, "watch_hours_30d"] == float(jan[u]["watch_hours_30d"])
    just_before_feb = _pit(materialized, users, "2024-02-28T23:59:59+00:00").set_index("user_id")
    assert list(just_before_feb.watch_hours_30d) == list(mid.watch_hours_30d)
    before = _pit(materialized, users, "2024-01-30T23:59:59+00:00")
    from streamflow.features.store import get_store
    from streamflow.features.training import feature_names

    features = feature_names(get_store(materialized).get_feature_service(FEATURE_SERVICE))
    assert len(before) == len(users) and before[features].isna().all().all()


def _feast_reference(settings, store, entity_sql: str) -> pd.DataFrame:
    """Feast's own point-in-time query (RetrievalJob.to_sql) for every view of the service, run
    as is (nested loops off only so that it ends in seconds), joined on the entity row."""
    service = store.get_feature_service(FEATURE_SERVICE)
    parts = []
    for proj in service.feature_view_projections:
        query = store.get_historical_features(
            entity_df=entity_sql, features=[f"{proj.name_to_use()}:{f.name}" for f in proj.features]).to_sql()
        with psycopg.connect(settings.conninfo_in_zone(None)) as conn, conn.transaction():
            conn.execute("set local enable_nestloop = off")
            cur = conn.execute(query)
            df = pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])
        df["event_timestamp"] = pd.to_datetime(df.event_timestamp, utc=True)
        parts.append(df.set_index(["user_id", "event_timestamp"])[[f.name for f in proj.features]])
    return pd.concat(parts, axis=1).sort_index()


def test_point_in_time_join_equals_feasts_own_query(materialized, store):
    """Every label row, plus rows between months, before the first month, past the last month's
    TTL and of an unknown user: our query and Feast's give the same values, NULLs included."""
    from streamflow.features.training import feature_names, historical_features

    entity_sql = """
        select user_id, event_timestamp from marts.labels_snapshots
        union all  -- between the months: the earlier month's values
        select user_id, event_timestamp + interval '10 days 7 hours' from marts.labels_snapshots
        where as_of = (select min(as_of) from marts.labels_snapshots)
        union all  -- before the first month: NULLs
        (select user_id, event_timestamp - interval '1 second' from marts.labels_snapshots
         where as_of = (select min(as_of) from marts.labels_snapshots) order by user_id limit 50)
        union all  -- past the newest month's TTL: NULLs
        (select user_id, event_timestamp + interval '32 days' from marts.labels_snapshots
         where as_of = (select max(as_of) from marts.labels_snapshots) order by user_id limit 50)
        union all
        select 'nobody-0000', (select max(event_timestamp) from marts.labels_snapshots)"""
    ours = historical_features(materialized, entity_sql, store).set_index(["user_id", "event_timestamp"])
    features = feature_names(store.get_feature_service(FEATURE_SERVICE))
    reference = _feast_reference(materialized, store, entity_sql)
    assert len(ours) == len(reference) > 0
    pd.testing.assert_frame_equal(ours[features].sort_index(), reference[features], check_dtype=False)
    assert reference.loc["nobody-0000"].isna().all().all()
    assert reference[features].isna().all(axis=1).sum() >= 101  # the NULL rows are really there


def test_no_feature_comes_from_a_later_month(training, materialized):
    """Every feature of every row equals its mart's value at the row's own month (each row's event
    timestamp is its month's), which is the newest snapshot not later than the row."""
    from streamflow.features.manifest import mart_relation
    from streamflow.features.store import get_store

    service = get_store(materialized).get_feature_service(FEATURE_SERVICE)
    store = get_store(materialized)
    with psycopg.connect(materialized.conninfo) as conn:
        for proj in service.feature_view_projections:
            fv = store.get_feature_view(proj.name)
            rel = mart_relation(fv.batch_source.tags["dbt_model"])
            assert rel.sql in fv.batch_source.get_table_query_string()
            cols = [f.name for f in proj.features]
            cur = conn.execute(f"select user_id, event_timestamp, {', '.join(cols)} from "
                               f"{fv.batch_source.get_table_query_string()} s")
            mart = pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])
            mart["event_timestamp"] = pd.to_datetime(mart.event_timestamp, utc=True)
            merged = training[["user_id", "event_timestamp", *cols]].merge(
                mart, on=["user_id", "event_timestamp"], how="left", suffixes=("", "_mart"))
            for c in cols:
                a, b = merged[c], merged[f"{c}_mart"]
                if pd.api.types.is_datetime64_any_dtype(a):
                    b = pd.to_datetime(b, utc=True)
                same = (a == b) | (a.isna() & b.isna())
                assert same.all(), f"{c}: {merged[~same].head()}"


def test_training_set_is_the_same_under_utc_and_new_york(materialized, training, tmp_path):
    from streamflow.features.training import build_training_set

    ident = sql.Identifier(materialized.database)
    with psycopg.connect(materialized.conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("alter database {} set timezone = 'America/New_York'").format(ident))
    try:
        with psycopg.connect(materialized.conninfo_in_zone(None)) as conn:
            assert conn.execute("show timezone").fetchone()[0] == "America/New_York"
        ny = pd.read_parquet(build_training_set(materialized, out_dir=tmp_path).with_suffix(".parquet"))
    finally:
        with psycopg.connect(materialized.conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("alter database {} set timezone = 'UTC'").format(ident))
    utc = pd.read_parquet(build_training_set(materialized, out_dir=tmp_path / "utc").with_suffix(".parquet"))
    pd.testing.assert_frame_equal(ny, utc)
    pd.testing.assert_frame_equal(utc, training)


# ------------------------------------------------------------------ online store

def test_check_skew_reports_no_mismatch(materialized, store):
    from streamflow.features.skew import check_skew

    assert check_skew(materialized, store=store) == 0


def test_unknown_user_gets_nulls(materialized, store):
    service = store.get_feature_service(FEATURE_SERVICE)
    got = store.get_online_features(features=service, entity_rows=[{"user_id": "no-such-user"}]).to_dict()
    assert got["user_id"] == ["no-such-user"]
    assert all(v == [None] for k, v in got.items() if k != "user_id")


def test_online_values_decode_like_feast(materialized, store, real_seeds):
    """The rows the materializer wrote read back through Feast's own reader as the CSV values."""
    feb = _csv(real_seeds, "month_001", "usage_agg_30d") if real_seeds else {}
    users = sorted(feb)[:20]
    got = store.get_online_features(features=store.get_feature_service(FEATURE_SERVICE),
                                    entity_rows=[{"user_id": u} for u in users]).to_dict()
    for i, u in enumerate(users):
        assert got["watch_hours_30d"][i] == float(feb[u]["watch_hours_30d"])
        assert got["skips_7d"][i] == int(feb[u]["skips_7d"])


def test_materializing_twice_changes_nothing(materialized):
    from streamflow.features.materialize import materialize

    before = _online_snapshot(materialized)
    assert sum(len(v) for v in before.values()) > 0
    results = materialize(materialized)
    assert sum(r.written + r.removed for r in results) == 0
    assert _online_snapshot(materialized) == before


def test_redelivering_an_older_month_changes_nothing(materialized, real_seeds):
    from streamflow.features.materialize import materialize

    before = _online_snapshot(materialized)
    results = materialize(materialized, as_of=JAN)
    assert sum(r.written + r.removed for r in results) == 0
    assert _online_snapshot(materialized) == before
    # and the guard itself: an older row pushed straight at the upsert is refused
    with psycopg.connect(materialized.conninfo) as conn:
        from streamflow.features.materialize import as_of_instant, view_statement
        from streamflow.features.store import get_store

        fv = get_store(materialized).get_feature_view("usage_agg_30d_fv")
        ser.create_sql_helpers(conn)
        stmt, params = view_statement(fv, [JAN], as_of_instant(JAN), as_of_instant(FEB) - fv.ttl,
                                      has_value_num=False)
        assert conn.execute(stmt, params).fetchone() == (0, 0)  # (written, removed)
        conn.commit()
    assert _online_snapshot(materialized) == before


def _drop_user(month_dir: Path, user_id: str) -> None:
    """Remove a user from every export file of a month."""
    for path in month_dir.glob("*.csv"):
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(line for line in lines if not line.startswith(f"{user_id},")))


def test_online_store_follows_redeliveries_and_never_revives_expired_values(fresh_db, tmp_path):
    """Three generated months. A value older than the TTL never comes back online, not even by
    re-materializing an older month; a user withdrawn by a re-delivery of the newest month falls
    back to their previous snapshot online, or disappears when they have none in the TTL window,
    exactly as in the offline point-in-time join; an unloaded newest month leaves no value behind."""
    from streamflow.build import dbt_build
    from streamflow.features.materialize import as_of_instant, materialize
    from streamflow.features.skew import check_skew
    from streamflow.features.store import apply, get_store
    from streamflow.generate import generate
    from streamflow.ingest import ingest_all
    from streamflow.validation import validate

    seeds = tmp_path / "exports"
    generate(seeds, users=200, months=3, seed=5)
    users = sorted(_csv(seeds, "month_000", "users"))
    only_in_january, withdrawn, only_in_march = users[:3]
    for month in ("month_001", "month_002"):
        _drop_user(seeds / month, only_in_january)
    for month in ("month_000", "month_001"):
        _drop_user(seeds / month, only_in_march)

    def run_pipeline() -> None:
        ingest_all(fresh_db, seeds)
        dbt_build(fresh_db)
        assert validate(fresh_db)
        apply(fresh_db)
        materialize(fresh_db)
        assert check_skew(fresh_db) == 0

    run_pipeline()
    store = get_store(fresh_db)
    service = store.get_feature_service(FEATURE_SERVICE)

    def online(user_id: str) -> dict:
        got = store.get_online_features(features=service, entity_rows=[{"user_id": user_id}]).to_dict()
        return {k: v[0] for k, v in got.items() if k != "user_id"}

    # January's values are past the TTL at March: not online, and not revived by older months.
    assert set(online(only_in_january).values()) == {None}
    before = _online_snapshot(fresh_db)
    for older in (JAN, FEB):
        assert sum(r.written + r.removed for r in materialize(fresh_db, as_of=older)) == 0
    assert _online_snapshot(fresh_db) == before
    assert set(online(only_in_january).values()) == {None}

    # March re-delivered without one user: online falls back to that user's February values.
    mar = date(2024, 3, 31)
    mar_usage = _csv(seeds, "month_002", "usage_agg_30d")[withdrawn]
    assert online(withdrawn)["watch_hours_30d"] == float(mar_usage["watch_hours_30d"])
    assert online(only_in_march)["watch_hours_30d"] is not None
    for user_id in (withdrawn, only_in_march):
        _drop_user(seeds / "month_002", user_id)
    run_pipeline()
    assert set(online(only_in_march).values()) == {None}  # no snapshot left in the window: removed
    feb_usage = _csv(seeds, "month_001", "usage_agg_30d")[withdrawn]
    assert online(withdrawn)["watch_hours_30d"] == float(feb_usage["watch_hours_30d"])
    with psycopg.connect(fresh_db.conninfo) as conn:
        stamps = conn.execute(sql.SQL("select distinct event_ts from {}").format(
            sql.Identifier(*ser.online_table("usage_agg_30d_fv")))).fetchall()
    assert {s for (s,) in stamps} == {as_of_instant(FEB), as_of_instant(mar)}

    # March unloaded (loaded by mistake): raw, marts and online fall back to February.
    from streamflow.ingest import unload_month

    unload_month(fresh_db, mar)
    with pytest.raises(StreamflowError, match="not loaded"):
        unload_month(fresh_db, mar)
    dbt_build(fresh_db)
    materialize(fresh_db)
    assert check_skew(fresh_db) == 0
    with psycopg.connect(fresh_db.conninfo) as conn:
        assert conn.execute("select count(*) from raw.users where as_of = %s", (mar,)).fetchone()[0] == 0
        assert conn.execute("select count(*) from marts.usage_agg_30d_snapshots where as_of = %s",
                            (mar,)).fetchone()[0] == 0
        stamps = conn.execute(sql.SQL("select distinct event_ts from {}").format(
            sql.Identifier(*ser.online_table("usage_agg_30d_fv")))).fetchall()
    # (January's values are back for the user who is only in January: within the TTL at February)
    assert {s for (s,) in stamps} == {as_of_instant(JAN), as_of_instant(FEB)}
    assert online(only_in_january)["watch_hours_30d"] is not None
    feb_usage = _csv(seeds, "month_001", "usage_agg_30d")
    for user_id in users[3:8]:
        assert online(user_id)["watch_hours_30d"] == float(feb_usage[user_id]["watch_hours_30d"])


def test_online_read_is_finite(materialized, store):
    got = store.get_online_features(features=store.get_feature_service(FEATURE_SERVICE),
                                    entity_rows=[{"user_id": "7590-VHVEG"}]).to_dict()
    assert all(not (isinstance(v[0], float) and math.isnan(v[0])) for v in got.values())


def test_plain_feast_materialize_writes_the_same_rows(materialized, store):
    """Feast's own materialize over the same window leaves the online tables byte-identical."""
    from datetime import timedelta

    from streamflow.features.materialize import as_of_instant, materialize

    ours = _online_snapshot(materialized)
    feb = as_of_instant(FEB)
    try:
        with psycopg.connect(materialized.conninfo, autocommit=True) as conn:
            for name in ours:
                conn.execute(sql.SQL("truncate {}").format(sql.Identifier(*ser.online_table(name))))
        store.materialize(start_date=feb - timedelta(days=31), end_date=feb + timedelta(seconds=1))
        assert _online_snapshot(materialized) == ours
    finally:
        with psycopg.connect(materialized.conninfo, autocommit=True) as conn:
            for name in ours:
                conn.execute(sql.SQL("truncate {}").format(sql.Identifier(*ser.online_table(name))))
        materialize(materialized)
    assert _online_snapshot(materialized) == ours
