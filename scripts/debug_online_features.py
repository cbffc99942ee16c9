"""Print one user's online features as Feast itself reads them, with each view's snapshot time.

    .venv/bin/python scripts/debug_online_features.py 7590-VHVEG

Uses Feast's own ``get_online_features`` through the churn model's feature
service (not the API's fast reader), so it is the reference when the two differ.
"""

from __future__ import annotations

import sys

import psycopg
from psycopg import sql


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    user_id = argv[0]
    from streamflow.db import ensure_up
    from streamflow.features import FEATURE_SERVICE
    from streamflow.features import serialization as ser
    from streamflow.features.store import get_store
    from streamflow.settings import get_settings

    settings = ensure_up(get_settings())
    store = get_store(settings)
    service = store.get_feature_service(FEATURE_SERVICE)
    values = store.get_online_features(features=service, entity_rows=[{"user_id": user_id}]).to_dict()
    print(f"user_id {user_id} ({FEATURE_SERVICE}, database {settings.database})")
    with psycopg.connect(settings.conninfo) as conn:
        for proj in service.feature_view_projections:
            query = sql.SQL("select max(event_ts), max(created_ts) from {} where entity_key = %s").format(
                sql.Identifier(*ser.online_table(proj.name)))
            row = conn.execute(query, (ser.entity_key(user_id),)).fetchone()
            # created_ts is NULL in rows written by a Feast without a created timestamp column
            loaded = f", loaded {row[1]:%Y-%m-%d %H:%M:%S}" if row[1] else ""
            when = f"snapshot {row[0]:%Y-%m-%d}{loaded}" if row[0] else "not found"
            print(f"  {proj.name} ({when})")
            for f in proj.features:
                print(f"    {f.name:32} {values[f.name][0]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
