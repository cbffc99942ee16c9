"""Feast's PostgreSQL online-store encoding, in Python and in SQL.

The online table of feature view ``fv`` is ``feast.streamflow_<fv>`` with one row
per (entity_key, feature_name):

- ``entity_key``: Feast's entity key serialization v3 of ``{"user_id": <str>}``;
- ``value``: the ``feast.types.Value`` protobuf of the feature, serialized
  (NULL, and NaN for doubles, are an empty ``Value``: ``b""``);
- ``value_text``: ``str()`` of the value for strings, numbers and booleans, else NULL;
- ``event_ts`` / ``created_ts``: the snapshot's event and load instants.

The Python half (no Feast import, so it is cheap for the API) encodes keys and
decodes values; the SQL half produces byte-identical rows inside PostgreSQL,
so the materializer never pulls the marts into Python. tests/test_features_serialization.py
holds both halves against Feast's own functions.
"""

from __future__ import annotations

import struct
from datetime import datetime, timezone
from typing import Any

from streamflow.features import ENTITY_JOIN_KEY, FEAST_SCHEMA, PROJECT

# ValueType enum numbers (feast/protos/feast/types/Value.proto)
STRING_TYPE = 2

# Serialization v3 prefix of a single string join key "user_id":
# <n keys:u32=1> <key type:u32=STRING> <len:u32> "user_id" <value type:u32=STRING>
_KEY = ENTITY_JOIN_KEY.encode()
ENTITY_KEY_PREFIX = struct.pack("<III", 1, STRING_TYPE, len(_KEY)) + _KEY + struct.pack("<I", STRING_TYPE)


def online_table(feature_view: str) -> tuple[str, str]:
    """(schema, table) of a feature view's online table."""
    return FEAST_SCHEMA, f"{PROJECT}_{feature_view}"


def entity_key(user_id: str) -> bytes:
    """Feast's ``serialize_entity_key(..., entity_key_serialization_version=3)`` for one user."""
    raw = user_id.encode("utf8")
    return ENTITY_KEY_PREFIX + struct.pack("<I", len(raw)) + raw


def user_id_of(key: bytes) -> str:
    """Inverse of :func:`entity_key`."""
    if not key.startswith(ENTITY_KEY_PREFIX):
        raise ValueError("not a v3 user_id entity key")
    (n,) = struct.unpack_from("<I", key, len(ENTITY_KEY_PREFIX))
    start = len(ENTITY_KEY_PREFIX) + 4
    return key[start:start + n].decode("utf8")


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _signed64(n: int) -> int:
    return n - (1 << 64) if n >= 1 << 63 else n


def decode_value(value: bytes | memoryview | None) -> Any:
    """Python value of a serialized scalar ``feast.types.Value`` (None for an empty one).

    Handles the scalar kinds Feast writes for PostgreSQL-backed features: string,
    int32, int64, double, float, bool and unix timestamp (as a UTC datetime).
    """
    if not value:
        return None
    buf = bytes(value)
    tag, pos = _varint(buf, 0)
    field, wire = tag >> 3, tag & 7
    if wire == 0:
        n, _ = _varint(buf, pos)
        if field == 7:
            return bool(n)
        if field == 3:  # int32: sign-extended to 64 bits on the wire
            return _signed64(n)
        if field == 4:
            return _signed64(n)
        if field == 8:
            return datetime.fromtimestamp(_signed64(n), tz=timezone.utc)
    elif wire == 1 and field == 5:
        return struct.unpack_from("<d", buf, pos)[0]
    elif wire == 5 and field == 6:
        return struct.unpack_from("<f", buf, pos)[0]
    elif wire == 2 and field == 2:
        n, pos = _varint(buf, pos)
        return buf[pos:pos + n].decode("utf8")
    raise ValueError(f"unsupported feast Value encoding (field {field}, wire type {wire})")


# --------------------------------------------------------------------------- SQL half
#
# Helper functions live in pg_temp: they exist only for the materializing session
# and leave nothing behind in the database. Call ``create_sql_helpers`` once per
# connection, then use the expressions below.

SQL_HELPERS = r"""
-- little-endian 4 bytes of an int
create or replace function pg_temp.le32(n integer) returns bytea language sql immutable as $$
  select set_byte(set_byte(set_byte(set_byte('\x00000000'::bytea, 0, n & 255), 1, (n >> 8) & 255),
                  2, (n >> 16) & 255), 3, (n >> 24) & 255)
$$;
-- bytes of a float8 in little-endian order (float8send is big-endian); a single
-- expression so that PostgreSQL inlines it instead of calling a function per value
create or replace function pg_temp.le_float8(x float8) returns bytea language sql immutable as $$
  select substring(float8send(x) from 8 for 1) || substring(float8send(x) from 7 for 1)
      || substring(float8send(x) from 6 for 1) || substring(float8send(x) from 5 for 1)
      || substring(float8send(x) from 4 for 1) || substring(float8send(x) from 3 for 1)
      || substring(float8send(x) from 2 for 1) || substring(float8send(x) from 1 for 1)
$$;
-- protobuf varint of a 64-bit integer (negative numbers: 10 bytes, two's complement);
-- strict: NULL in, NULL out (the loop below would never end on NULL)
create or replace function pg_temp.varint(n bigint) returns bytea language plpgsql immutable strict as $$
declare
  out bytea := '';
  u numeric := case when n < 0 then n::numeric + 18446744073709551616 else n::numeric end;
begin
  loop
    if u < 128 then
      return out || set_byte('\x00'::bytea, 0, u::int);
    end if;
    out := out || set_byte('\x00'::bytea, 0, (mod(u, 128) + 128)::int);
    u := div(u, 128);
  end loop;
end $$;
-- Python's str(float): shortest round-trip digits, positional for 1e-4 <= |x| < 1e16,
-- always with a '.0' when integral. PostgreSQL's float8out (extra_float_digits = 1)
-- gives the same digits except above 2**53, where it may print one digit more than
-- needed, and it switches to exponent notation at 1e15 instead of 1e16.
create or replace function pg_temp.py_float_str(x float8) returns text language plpgsql immutable strict as $$
declare
  t text := x::text;
  mant text; e int; digits text; neg boolean; k int; cand numeric;
begin
  if t = 'Infinity' then return 'inf'; end if;
  if t = '-Infinity' then return '-inf'; end if;
  if t = 'NaN' then return 'nan'; end if;
  if position('e' in t) = 0 then
    return case when position('.' in t) = 0 then t || '.0' else t end;
  end if;
  mant := split_part(t, 'e', 1);
  e := split_part(t, 'e', 2)::int;
  if abs(x) >= 9007199254740992 then
    -- shortest mantissa that still reads back as x
    for k in 0 .. 15 loop
      cand := trim_scale(round(mant::numeric, k));
      begin
        if (cand::text || 'e' || e)::float8 = x then
          mant := cand::text;
          exit;
        end if;
      exception when numeric_value_out_of_range then
        null;  -- rounded up past the largest double: not a candidate
      end;
    end loop;
  end if;
  neg := left(mant, 1) = '-';
  digits := replace(ltrim(mant, '-'), '.', '');
  if e < -4 or e >= 16 then
    return mant || 'e' || case when e < 0 then '-' else '+' end
        || case when abs(e) < 10 then '0' else '' end || abs(e)::text;
  end if;
  return case when neg then '-' else '' end || rpad(digits, e + 1, '0') ||
         case when length(digits) > e + 1 then '.' || substring(digits from e + 2) else '.0' end;
end $$;
"""


def create_sql_helpers(conn) -> None:
    # float8 -> text must give the shortest round-trip digits, whatever the server default.
    conn.execute("set extra_float_digits = 1")
    conn.execute(SQL_HELPERS)


def sql_entity_key(col: str) -> str:
    """SQL expression: :func:`entity_key` of the text column ``col``."""
    prefix = ENTITY_KEY_PREFIX.hex()
    return (f"('\\x{prefix}'::bytea || pg_temp.le32(octet_length(convert_to({col}, 'UTF8'))) "
            f"|| convert_to({col}, 'UTF8'))")


def _varint_expr(n: str) -> str:
    # Inline fast path for the common small non-negative values (one byte).
    return f"(case when {n} between 0 and 127 then set_byte('\\x00'::bytea, 0, ({n})::int) " \
           f"else pg_temp.varint(({n})::bigint) end)"


def sql_value(col: str, value_type: str) -> tuple[str, str]:
    """SQL expressions (value, value_text) Feast writes for column ``col`` of Feast type ``value_type``.

    ``value_type`` is a ``feast.value_type.ValueType`` name: STRING, INT32, INT64,
    DOUBLE, BOOL or UNIX_TIMESTAMP.
    """
    empty = "'\\x'::bytea"
    if value_type == "STRING":
        raw = f"convert_to({col}, 'UTF8')"
        value = f"'\\x12'::bytea || {_varint_expr(f'octet_length({raw})')} || {raw}"
        text = col
    elif value_type in ("INT32", "INT64"):
        tag = "18" if value_type == "INT32" else "20"
        value = f"'\\x{tag}'::bytea || {_varint_expr(col)}"
        text = f"({col})::text"
    elif value_type == "DOUBLE":
        # Feast turns NaN into an empty Value (and no value_text).
        value = f"case when ({col})::float8 = 'NaN'::float8 then {empty} " \
                f"else '\\x29'::bytea || pg_temp.le_float8(({col})::float8) end"
        # Inline fast path for the usual positional case; the function handles the rest.
        t = f"({col})::float8::text"
        text = (f"case when ({col})::float8 = 'NaN'::float8 then null "
                f"when position('e' in {t}) = 0 and position('.' in {t}) > 0 then {t} "
                f"when position('e' in {t}) = 0 and position('n' in {t}) = 0 then {t} || '.0' "
                f"else pg_temp.py_float_str(({col})::float8) end")
    elif value_type == "BOOL":
        value = f"case when {col} then '\\x3801'::bytea when not {col} then '\\x3800'::bytea end"
        text = f"case when {col} then 'True' when not {col} then 'False' end"
    elif value_type == "UNIX_TIMESTAMP":
        # whole seconds since the epoch, truncated like Python's int(datetime.timestamp())
        secs = f"trunc(extract(epoch from {col}))::bigint"
        value = f"'\\x40'::bytea || {_varint_expr(secs)}"
        text = "null::text"
    else:
        raise ValueError(f"no SQL encoding for Feast type {value_type}")
    return f"coalesce({value}, {empty})", f"({text})"
