"""The online-store encoding in streamflow.features.serialization equals Feast's own, byte for byte."""

from __future__ import annotations

import math
import random
import struct
from datetime import datetime, timezone

import numpy as np
import psycopg
import pytest

from streamflow.features import serialization as ser

pytestmark = pytest.mark.filterwarnings("ignore")


def _feast():
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores.helpers import extract_text_and_num
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    return (serialize_entity_key, extract_text_and_num, EntityKey, Value,
            python_values_to_proto_values, ValueType)


USER_IDS = ["7590-VHVEG", "", "é-ü-✓", "x" * 300, "a b"]

_rng = random.Random(5)
DOUBLES = [0.0, -0.0, 1.0, 100.0, -3.5, 0.1 + 0.2, 29.85, 593.3, 1e15, 1e16, 123456789012345.6,
           1234567890123456.0, 9999999999999998.0, 1e-4, 1e-5, 1.5e-7, 1.7976931348623157e308, 5e-324,
           math.inf, -math.inf, math.nan, None] + [_rng.uniform(-1e6, 1e6) for _ in range(300)] + \
          [_rng.lognormvariate(0, 12) for _ in range(300)] + \
          [float(_rng.randint(-10**17, 10**17)) for _ in range(100)]
INTS = [0, 1, 127, 128, 300, 16383, 16384, -1, -128, 2**31 - 1, -(2**31), None]
TIMESTAMPS = [datetime(2022, 1, 28, tzinfo=timezone.utc), datetime(1960, 7, 1, tzinfo=timezone.utc),
              datetime(1970, 1, 1, tzinfo=timezone.utc), None]
STRINGS = ["", "DSL", "Month-to-month", "é✓", "x" * 200, "'quote'", None]
BOOLS = [True, False, None]

CASES = [("DOUBLE", "float8", DOUBLES), ("INT32", "integer", INTS), ("INT64", "bigint", INTS),
         ("BOOL", "boolean", BOOLS), ("STRING", "text", STRINGS),
         ("UNIX_TIMESTAMP", "timestamptz", TIMESTAMPS)]


def test_entity_key_matches_feast():
    serialize_entity_key, _, EntityKey, Value, _, _ = _feast()
    for uid in USER_IDS:
        proto = EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=uid)])
        feast_key = serialize_entity_key(proto, entity_key_serialization_version=3)
        assert ser.entity_key(uid) == feast_key
        assert ser.user_id_of(feast_key) == uid


def _feast_rows(value_type: str, values: list):
    _, extract_text_and_num, _, _, to_proto, ValueType = _feast()
    if value_type == "UNIX_TIMESTAMP":
        protos = to_proto(np.array(values, dtype=object), ValueType[value_type])
    else:
        protos = to_proto(values, ValueType[value_type])
    return [(p.SerializeToString(), extract_text_and_num(p, False)[0]) for p in protos]


@pytest.mark.parametrize(("value_type", "pg_type", "values"), CASES, ids=[c[0] for c in CASES])
def test_sql_encoding_matches_feast(pg_server, value_type, pg_type, values):
    expected = _feast_rows(value_type, values)
    value_sql, text_sql = ser.sql_value("v", value_type)
    with psycopg.connect(pg_server.conninfo) as conn:
        ser.create_sql_helpers(conn)
        got = []
        for v in values:
            query = f"select {value_sql}, {text_sql} from (select %s::{pg_type} as v) s"
            row = conn.execute(query, (v,)).fetchone()
            got.append((bytes(row[0]), row[1]))
    for v, g, e in zip(values, got, expected, strict=False):
        assert g == e, f"{value_type} {v!r}: sql {g!r} != feast {e!r}"


@pytest.mark.parametrize(("value_type", "pg_type", "values"), CASES, ids=[c[0] for c in CASES])
def test_python_decoder_reads_feast_values(value_type, pg_type, values):
    for v, (raw, _) in zip(values, _feast_rows(value_type, values), strict=False):
        got = ser.decode_value(raw)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            assert got is None
        else:
            assert got == v


def test_sql_entity_key(pg_server):
    with psycopg.connect(pg_server.conninfo) as conn:
        ser.create_sql_helpers(conn)
        for uid in USER_IDS:
            query = f"select {ser.sql_entity_key('u')} from (select %s::text as u) s"
            got = conn.execute(query, (uid,)).fetchone()[0]
            assert bytes(got) == ser.entity_key(uid)


def test_double_layout_is_little_endian():
    assert ser.decode_value(b"\x29" + struct.pack("<d", 2.5)) == 2.5
