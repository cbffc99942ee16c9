"""The fast online reader (streamflow.features.online) against Feast itself: entity keys,
value decoding, whole vectors, and the `streamflow online-features` command."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import datetime, timezone

import psycopg
import pytest

from streamflow.features import online
from streamflow.settings import Settings


@pytest.mark.parametrize("user_id", ["7590-VHVEG", "a", "X" * 64, "ünï-cödé", "user@example.com"])
def test_entity_key_is_feasts(user_id):
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    key = EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=user_id)])
    expected = serialize_entity_key(key,
                                    entity_key_serialization_version=3)
    assert online.serialize_user_key(user_id) == expected


def test_decoding_is_feasts():
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import feast_value_type_to_python_type

    values = [Value(), Value(int32_val=-7), Value(int64_val=2**40), Value(double_val=29.85),
              Value(float_val=1.5), Value(bool_val=False), Value(bool_val=True), Value(string_val="DSL"),
              Value(string_val=""), Value(unix_timestamp_val=1644019200)]
    for v in values:
        raw = v.SerializeToString()
        expected = feast_value_type_to_python_type(v)
        for _ in range(2):  # the second time from the cache
            got = online.decode_value(raw)
            assert got == expected and type(got) is type(expected), v
    assert online.decode_value(Value(unix_timestamp_val=1644019200).SerializeToString()) == \
        datetime(2022, 2, 5, tzinfo=timezone.utc)
    # Never NaN: a non-finite float is None.
    assert online.decode_value(Value(double_val=float("nan")).SerializeToString()) is None
    assert online.decode_value(Value(double_val=float("inf")).SerializeToString()) is None


@pytest.mark.parametrize("user_id", ["7590-VHVEG", "0000-AAAA", "a.b_c:d@e-f"])
def test_valid_ids(user_id):
    assert online.valid_user_id(user_id)


@pytest.mark.parametrize("user_id", ["", " ", "' OR '1'='1", "x';DROP TABLE users;--", "/", "a b", "x" * 65,
                                     "-x", "é", "a\n", "a%2F"])
def test_invalid_ids(user_id):
    assert not online.valid_user_id(user_id)


def test_read_online_matches_feast(materialized: Settings):
    from streamflow.features.store import get_store

    catalog = online.load_catalog(materialized)
    assert catalog.select().names() == [f.name for f in catalog.services["churn_model_v1"]]
    assert len(catalog.select().names()) == 21
    with psycopg.connect(materialized.conninfo) as conn:
        users = [u for (u,) in conn.execute("select distinct user_id from marts.user_profile_snapshots")]
    sample = random.Random(3).sample(users, 300) + ["0000-NOBODY"]
    store = get_store(materialized)
    feast = store.get_online_features(features=store.get_feature_service("churn_model_v1"),
                                      entity_rows=[{"user_id": u} for u in sample]).to_dict()
    results = online.read_online(materialized, sample, catalog=catalog)
    assert [r["user_id"] for r in results] == sample
    assert results[-1]["found"] is False
    for i, result in enumerate(results):
        for name, value in result["features"].items():
            assert value == feast[name][i] and type(value) is type(feast[name][i]), (sample[i], name)
    with pytest.raises(online.SelectionError):
        online.read_online(materialized, ["' OR '1'='1"], catalog=catalog)


def test_online_features_command(materialized: Settings):
    env = {**os.environ, **materialized.env()}
    env.pop("FEAST_REPO_PATH", None)
    out = subprocess.run([sys.executable, "-m", "streamflow.cli", "online-features", "7590-VHVEG"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["features"]["months_active"] == 1 and body["features"]["monthly_fee"] == 29.85
    assert body["views"]["subs_profile_fv"]["as_of"] == "2024-02-29"
    missing = subprocess.run([sys.executable, "-m", "streamflow.cli", "online-features", "0000-NOBODY"],
                             capture_output=True, text=True, env=env, timeout=300)
    assert missing.returncode != 0 and "0000-NOBODY" in missing.stderr and "Traceback" not in missing.stderr
