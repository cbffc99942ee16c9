"""Training/serving skew check: online vectors vs the offline point-in-time vectors.

For every user known offline (any mart row up to the latest materialized as_of)
or online, the vector Feast's ``get_online_features`` returns through the churn
model's feature service must equal the vector ``get_historical_features`` gives
at the latest materialized as_of (the newest ``event_ts`` in the online tables).
"""

from __future__ import annotations

import math
from datetime import datetime

import pandas as pd
import psycopg
from psycopg import sql

from streamflow.errors import StreamflowError
from streamflow.features import ENTITY_JOIN_KEY, FEATURE_SERVICE
from streamflow.features import serialization as ser
from streamflow.settings import Settings

CHUNK = 1000


def latest_materialized(conn, views) -> datetime | None:
    parts = [sql.SQL("select max(event_ts) from {}").format(sql.Identifier(*ser.online_table(v.name)))
             for v in views]
    row = conn.execute(sql.SQL("select max(m) from ({}) x(m)").format(sql.SQL(" union all ").join(parts)))
    return row.fetchone()[0]


def _online_users(conn, views) -> set[str]:
    users: set[str] = set()
    for v in views:
        q = sql.SQL("select distinct entity_key from {}").format(sql.Identifier(*ser.online_table(v.name)))
        users.update(ser.user_id_of(bytes(k)) for (k,) in conn.execute(q))
    return users


def _same(a, b) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)) or a is pd.NaT:
        return b is None or (isinstance(b, float) and math.isnan(b)) or b is pd.NaT
    if isinstance(a, pd.Timestamp | datetime) or isinstance(b, pd.Timestamp | datetime):
        try:
            return pd.Timestamp(a).tz_convert("UTC") == pd.Timestamp(b).tz_convert("UTC")
        except (TypeError, ValueError):
            return False
    return a == b


def _py(value):
    """A pandas cell as a plain Python value (numpy scalars unwrapped, NA -> None)."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") and not isinstance(value, pd.Timestamp) else value


def check_skew(settings: Settings, store=None, max_report: int = 20) -> int:
    """Print every mismatch (up to ``max_report`` in detail); return the number of mismatching users."""
    from streamflow.features.store import get_store
    from streamflow.features.training import historical_features

    store = store or get_store(settings)
    service = store.get_feature_service(FEATURE_SERVICE)
    views = [store.get_feature_view(p.name) for p in service.feature_view_projections]
    features = [f.name for p in service.feature_view_projections for f in p.features]
    with psycopg.connect(settings.conninfo) as conn:
        at = latest_materialized(conn, views)
        if at is None:
            raise StreamflowError("the online store is empty: run `make materialize` first")
        online_users = _online_users(conn, views)
        mart_sql = " union ".join(
            f"select {ENTITY_JOIN_KEY} from {v.batch_source.get_table_query_string()} s "
            f"where \"{v.batch_source.timestamp_field}\" <= '{at.isoformat()}'::timestamptz" for v in views)
        offline_users = {u for (u,) in conn.execute(mart_sql)}
    users = sorted(online_users | offline_users)
    print(f"Checking {len(users)} users: online store vs offline point-in-time at {at.isoformat()}")

    # Offline: one entity row per user at the latest materialized instant.
    values = ", ".join("(" + ", ".join(
        ["'" + u.replace("'", "''") + "'", f"'{at.isoformat()}'::timestamptz"]) + ")" for u in users)
    entity_sql = f"select * from (values {values}) as e({ENTITY_JOIN_KEY}, event_timestamp)"
    offline = historical_features(settings, entity_sql, store).set_index(ENTITY_JOIN_KEY)

    mismatches = 0
    for start in range(0, len(users), CHUNK):
        chunk = users[start:start + CHUNK]
        online = store.get_online_features(
            features=service, entity_rows=[{ENTITY_JOIN_KEY: u} for u in chunk]).to_dict()
        for i, user in enumerate(chunk):
            diffs = []
            for f in features:
                on, off = online[f][i], _py(offline.at[user, f])
                if not _same(off, on):
                    diffs.append(f"{f}: online={on!r} offline={off!r}")
            if diffs:
                mismatches += 1
                if mismatches <= max_report:
                    print(f"  MISMATCH {user}: " + "; ".join(diffs))
    if mismatches:
        print(f"{mismatches} of {len(users)} users differ between online and offline")
    else:
        print(f"0 mismatches: all {len(users)} users' online vectors equal the offline ones")
    return mismatches
