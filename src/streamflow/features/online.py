"""Fast online reads: Feast's PostgreSQL online tables, decoded directly.

Feast's ``FeatureStore.get_online_features`` costs about 0.75 ms per user in
process, most of it Python bookkeeping around one SQL query. This module does the
same read with the same bytes and the same decoding, and nothing else:

* the feature names, their views, TTLs and the entity key serialization version
  come from the Feast registry once (:func:`load_catalog`) and are cached;
* one ``UNION ALL`` statement reads every requested view's online table
  (``<project>_<view>``, the table Feast's ``online_write_batch`` writes), with the
  serialized entity keys as bound parameters (never spliced into SQL);
* each ``value`` column is a serialized ``feast.types.Value`` protobuf, decoded
  with Feast's own ``ValueProto`` and converted to Python exactly as Feast's
  ``feast_value_type_to_python_type`` does (one deliberate difference: a
  non-finite float becomes ``None``, so callers never see NaN).

What Feast does not do and this module does
-------------------------------------------
Feast's online read ignores TTL: a value written months ago comes back as if it
were current. Here every view's value carries the snapshot it comes from
(``as_of``), and a value is **stale** when it is older than its view's TTL
relative to the *reference snapshot*: the newest ``event_ts`` materialized in
any of the catalog's online tables (i.e. the newest materialized month, not the
wall clock: the pipeline is monthly and a replayed history must read the same).
A stale value is reported with status ``OUTSIDE_MAX_AGE`` (Feast's own field
status name) and, unless ``include_stale`` is asked for, as ``None``: exactly
what the point-in-time training join (which does apply TTL) would have given
for that snapshot, so serving and training agree.

A value within its TTL that does not come from the reference snapshot (the user is
absent from the newest month in that view, but was there within the TTL) is still
returned, as the training join would, and marked: its view has ``latest: false`` and
its features are listed in ``not_latest``. With the project's 31-day TTL on monthly
snapshots, a user missing from only the newest month is ``not_latest``; missing from
two or more months, ``OUTSIDE_MAX_AGE``.

Per-feature statuses: ``PRESENT``, ``NULL_VALUE`` (the row exists, the value is
NULL), ``NOT_FOUND`` (no row for the user in that view), ``OUTSIDE_MAX_AGE``.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from psycopg import sql

from streamflow.errors import StreamflowError
from streamflow.raw_schema import USER_ID_PATTERN
from streamflow.settings import REPO_ROOT, Settings

DEFAULT_FEATURE_SERVICE = "churn_model_v1"
PROJECT = "streamflow"
JOIN_KEY = "user_id"

# The shape of a user id (raw_schema): the loader refuses any other, so every loaded user is servable.
_USER_ID_RE = re.compile(USER_ID_PATTERN)

PRESENT = "PRESENT"
NULL_VALUE = "NULL_VALUE"
NOT_FOUND = "NOT_FOUND"
OUTSIDE_MAX_AGE = "OUTSIDE_MAX_AGE"

_VALUE_TYPE_STRING = 2  # feast.types.ValueType.STRING


class OnlineReadError(StreamflowError):
    """The online store or the registry cannot answer (a human-readable reason)."""


class SelectionError(StreamflowError):
    """A requested feature service or feature reference does not exist."""


def valid_user_id(user_id: str) -> bool:
    return isinstance(user_id, str) and _USER_ID_RE.fullmatch(user_id) is not None


# --- entity keys ------------------------------------------------------------------------------

def serialize_user_key(user_id: str, version: int = 3) -> bytes:
    """Feast's ``serialize_entity_key`` for the single string join key ``user_id``.

    Version 3 layout: number of keys, then per key (type, length, utf-8 name), then
    per value (type, length, bytes); all lengths and types little-endian uint32.
    ``tests/test_api_online.py`` checks it against Feast's own function.
    """
    if version < 3:
        raise OnlineReadError(f"entity_key_serialization_version {version} is not supported (use 3)")
    name = JOIN_KEY.encode()
    value = user_id.encode("utf-8")
    return b"".join((
        struct.pack("<III", 1, _VALUE_TYPE_STRING, len(name)), name,
        struct.pack("<II", _VALUE_TYPE_STRING, len(value)), value,
    ))


# --- value decoding ---------------------------------------------------------------------------

_SCALARS = frozenset({"int64_val", "int32_val", "bool_val", "string_val", "bytes_val"})
_FLOATS = frozenset({"double_val", "float_val"})
_value_proto_cls = None
_to_python = None


def _proto():
    global _value_proto_cls, _to_python
    if _value_proto_cls is None:
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.type_map import feast_value_type_to_python_type

        _value_proto_cls, _to_python = Value, feast_value_type_to_python_type
    return _value_proto_cls


def _decode(raw: bytes) -> Any:
    v = _proto().FromString(raw)
    kind = v.WhichOneof("val")
    if kind is None:
        return None
    if kind in _SCALARS:
        return getattr(v, kind)
    if kind in _FLOATS:
        f = getattr(v, kind)
        return f if math.isfinite(f) else None
    out = _to_python(v)
    if isinstance(out, list):
        return [None if isinstance(x, float) and not math.isfinite(x) else x for x in out]
    return out


# Serialized values repeat a lot (booleans, small counts, categories): decode each once.
# Only immutable results are cached; the cache is bounded.
_DECODE_CACHE: dict[bytes, Any] = {}
_DECODE_CACHE_MAX = 200_000
_IMMUTABLE = (type(None), bool, int, float, str, bytes, datetime)


def decode_value(raw: bytes) -> Any:
    """A serialized ``feast.types.Value`` to the Python value Feast returns (NaN -> None)."""
    try:
        return _DECODE_CACHE[raw]
    except KeyError:
        pass
    value = _decode(raw)
    if isinstance(value, _IMMUTABLE):
        if len(_DECODE_CACHE) >= _DECODE_CACHE_MAX:
            _DECODE_CACHE.clear()
        _DECODE_CACHE[raw] = value
    return value


def json_default(obj: Any) -> Any:
    """JSON for the non-JSON values Feast can return."""
    if isinstance(obj, datetime):
        if obj.tzinfo is not None and obj.utcoffset() == timedelta(0):
            return obj.replace(tzinfo=None).isoformat() + "Z"
        return obj.isoformat()
    if isinstance(obj, date):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, bytes):
        import base64

        return base64.b64encode(obj).decode()
    return str(obj)  # Decimal, UUID


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      default=json_default).encode()


# --- the catalog: what the registry says ------------------------------------------------------

@dataclass(frozen=True)
class FeatureRef:
    view: str
    name: str
    value_type: str  # Feast ValueType name, e.g. INT64

    @property
    def ref(self) -> str:
        return f"{self.view}:{self.name}"


@dataclass(frozen=True)
class ViewSpec:
    name: str
    schema: str  # the online store's db_schema
    table: str  # the online table: <project>_<view>
    ttl_seconds: float | None  # None: no TTL (Feast's ttl of 0)
    features: tuple[FeatureRef, ...]


@dataclass(frozen=True)
class Selection:
    """The features one request asks for, in response order."""

    feature_service: str | None
    features: tuple[FeatureRef, ...]
    views: tuple[str, ...]  # distinct views, in first-use order

    def names(self) -> list[str]:
        return [f.name for f in self.features]


@dataclass(frozen=True)
class Catalog:
    project: str
    entity_key_version: int
    views: dict[str, ViewSpec]
    services: dict[str, tuple[FeatureRef, ...]]
    default_service: str = DEFAULT_FEATURE_SERVICE
    _selections: dict = field(default_factory=dict, compare=False, repr=False)

    def select(self, feature_service: str | None = None,
               features: Sequence[str] | None = None) -> Selection:
        """Resolve a request: a feature service (default ``churn_model_v1``) or explicit
        feature references (``view:feature``, or a bare feature name that only one view has)."""
        # None means "not given"; an empty value was given and is an error, not the default.
        key = (feature_service, None if features is None else tuple(features))
        cached = self._selections.get(key)
        if cached is not None:
            return cached
        if features is not None:
            if feature_service is not None:
                raise SelectionError("give either feature_service or features, not both")
            refs = tuple(self._resolve(f) for f in _split_refs(features))
            svc = None
        else:
            svc = self.default_service if feature_service is None else feature_service
            if svc not in self.services:
                known = ", ".join(sorted(self.services)) or "none"
                raise SelectionError(f"unknown feature service {svc!r} (known: {known})")
            refs = self.services[svc]
        seen: dict[str, FeatureRef] = {}
        for r in refs:
            other = seen.get(r.name)
            if other is not None and other != r:
                raise SelectionError(f"feature name {r.name!r} is in both {other.view} and {r.view}")
            seen[r.name] = r
        refs = tuple(dict.fromkeys(refs))
        views = tuple(dict.fromkeys(r.view for r in refs))
        selection = Selection(svc, refs, views)
        if len(self._selections) < 1024:
            self._selections[key] = selection
        return selection

    def _resolve(self, ref: str) -> FeatureRef:
        if ":" in ref:
            view, _, name = ref.partition(":")
            spec = self.views.get(view)
            if spec is None:
                raise SelectionError(f"unknown feature view {view!r} in {ref!r}")
            for f in spec.features:
                if f.name == name:
                    return f
            raise SelectionError(f"feature view {view!r} has no feature {name!r}")
        hits = [f for v in self.views.values() for f in v.features if f.name == ref]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise SelectionError(f"unknown feature {ref!r}")
        raise SelectionError(f"feature {ref!r} is in several views; write view:feature "
                             f"({', '.join(h.ref for h in hits)})")

    def describe(self) -> dict:
        return {
            "project": self.project,
            "default_feature_service": self.default_service,
            "feature_services": {s: [f.ref for f in refs] for s, refs in self.services.items()},
            "feature_views": {
                v.name: {"ttl_seconds": v.ttl_seconds,
                         "features": {f.name: f.value_type for f in v.features}}
                for v in self.views.values()
            },
        }


def _split_refs(features: Iterable[str]) -> list[str]:
    out = []
    for item in features:
        out.extend(p.strip() for p in item.split(",") if p.strip())
    if not out:
        raise SelectionError("features is empty")
    return out


def feature_repo_path() -> Path:
    import os

    return Path(os.environ.get("FEAST_REPO_PATH") or REPO_ROOT / "feature_repo")


def feature_store(settings: Settings):
    """Feast's FeatureStore over this project's ``feature_repo`` for ``settings``' database.

    ``FEAST_REPO_PATH`` points at another repo (its yaml reading ``${POSTGRES_*}``)."""
    import os

    if os.environ.get("FEAST_REPO_PATH"):
        settings.export_env()
        from feast import FeatureStore

        return FeatureStore(repo_path=str(feature_repo_path()))
    from streamflow.features.store import get_store

    return get_store(settings)


def catalog_from_store(store, default_service: str = DEFAULT_FEATURE_SERVICE) -> Catalog:
    """Read the feature views and services of the store's project from its registry."""
    project = store.config.project
    registry = store.registry
    # Feast creates and reads the online tables through search_path "<db_schema>,public";
    # they are created in db_schema (Feast creates it first).
    schema = store.config.online_store.db_schema or store.config.online_store.user
    views: dict[str, ViewSpec] = {}
    for fv in registry.list_feature_views(project, allow_cache=False):
        ttl = fv.ttl.total_seconds() if fv.ttl else None
        views[fv.name] = ViewSpec(
            name=fv.name,
            schema=schema,
            table=f"{project}_{fv.name}",
            ttl_seconds=ttl if ttl else None,
            features=tuple(FeatureRef(fv.name, f.name, f.dtype.to_value_type().name)
                           for f in fv.features),
        )
    services: dict[str, tuple[FeatureRef, ...]] = {}
    for svc in registry.list_feature_services(project, allow_cache=False):
        refs = []
        for proj in svc.feature_view_projections:
            spec = views.get(proj.name)
            if spec is None:  # an on-demand or stream view: not served here
                continue
            wanted = {f.name for f in proj.features}
            refs.extend(f for f in spec.features if f.name in wanted)
        services[svc.name] = tuple(refs)
    if getattr(store.config.registry, "enable_online_feature_view_versioning", False):
        raise OnlineReadError("online feature view versioning is enabled; this reader does not support it")
    return Catalog(project=project, entity_key_version=store.config.entity_key_serialization_version,
                   views=views, services=services, default_service=default_service)


def load_catalog(settings: Settings, default_service: str = DEFAULT_FEATURE_SERVICE) -> Catalog:
    """The catalog from the Feast registry of ``settings``' database."""
    try:
        catalog = catalog_from_store(feature_store(settings), default_service)
    except StreamflowError:
        raise
    except Exception as exc:  # Feast raises many kinds; say what and where
        raise OnlineReadError(f"cannot read the Feast registry ({feature_repo_path()}, "
                              f"db={settings.database}): {type(exc).__name__}: {exc}") from exc
    if default_service not in catalog.services:
        raise OnlineReadError(f"feature service {default_service!r} is not in the registry of "
                              f"db={settings.database}: run `make apply`")
    return catalog


# --- SQL --------------------------------------------------------------------------------------

_query_cache: dict[tuple, str] = {}


def online_query(catalog: Catalog, views: Sequence[str], many: bool) -> str:
    """One statement over the views' online tables. Parameters: the serialized entity key
    (``many=False``) or the list of them (``many=True``), once per view. Rendered once
    (identifiers quoted by psycopg) and cached: composing it costs more than running it."""
    key = (tuple((catalog.views[v].schema, catalog.views[v].table) for v in views), many)
    q = _query_cache.get(key)
    if q is None:
        where = "entity_key = ANY(%s)" if many else "entity_key = %s"
        q = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {tag}::int2, entity_key, feature_name, value, event_ts FROM {table} "
                    "WHERE " + where).format(tag=sql.Literal(i),
                                             table=sql.Identifier(catalog.views[v].schema,
                                                                  catalog.views[v].table))
            for i, v in enumerate(views)
        ).as_string()
        _query_cache[key] = q
    return q


def reference_query(catalog: Catalog) -> sql.Composed:
    """The newest materialized event time across the catalog's online tables."""
    return sql.SQL("SELECT max(ts) FROM ({}) t").format(sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT max(event_ts) AS ts FROM {}").format(sql.Identifier(v.schema, v.table))
        for v in catalog.views.values()
    ))


def changes_query(catalog: Catalog) -> tuple[str, dict]:
    """A cheap counter that moves when the online tables are written (statistics views):
    the reference snapshot is recomputed only when it moved."""
    return ("SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0), count(*) "
            "FROM pg_stat_user_tables WHERE (schemaname || '.' || relname) = ANY(%(t)s)",
            {"t": [f"{v.schema}.{v.table}" for v in catalog.views.values()]})


# --- assembling results -----------------------------------------------------------------------

def _ts_json(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z"


_VIEW_INFO_CACHE: dict[tuple, dict] = {}


def _view_info(spec: ViewSpec, ts: datetime, reference: datetime | None) -> dict:
    """Where a view's values come from (shared, read-only dicts: few distinct snapshots)."""
    key = (spec.name, spec.ttl_seconds, ts, reference)
    info = _VIEW_INFO_CACHE.get(key)
    if info is None:
        status = PRESENT
        if (spec.ttl_seconds is not None and reference is not None
                and (reference - ts).total_seconds() > spec.ttl_seconds):
            status = OUTSIDE_MAX_AGE
        info = {"as_of": ts.astimezone(timezone.utc).date().isoformat(),
                "event_timestamp": _ts_json(ts), "status": status,
                "latest": reference is None or ts >= reference, "ttl_seconds": spec.ttl_seconds}
        if len(_VIEW_INFO_CACHE) > 10_000:
            _VIEW_INFO_CACHE.clear()
        _VIEW_INFO_CACHE[key] = info
    return info


def assemble(catalog: Catalog, selection: Selection, user_ids: Sequence[str], keys: Sequence[bytes],
             rows: Iterable[tuple], reference: datetime | None,
             include_stale: bool = False) -> list[dict]:
    """Turn ``(tag, entity_key, feature_name, value, event_ts)`` rows into one result per user id.

    Each result: ``user_id``, ``found`` (any row at all), ``features`` (name -> value, in
    selection order), ``status`` (name -> PRESENT | NULL_VALUE | NOT_FOUND | OUTSIDE_MAX_AGE),
    ``views`` (view -> as_of, event_timestamp, status, latest, ttl_seconds), ``missing``,
    ``stale`` and ``not_latest`` (feature names), ``reference_as_of``.
    """
    views = selection.views
    by_key: dict[bytes, list[dict[str, tuple[bytes, datetime]]]] = {}
    for tag, ek, name, value, ts in rows:
        ek = bytes(ek)
        per_view = by_key.get(ek)
        if per_view is None:
            per_view = by_key[ek] = [{} for _ in views]
        per_view[tag][name] = (value, ts)

    ref_json = reference.date().isoformat() if reference is not None else None
    out = []
    for user_id, key in zip(user_ids, keys, strict=True):
        per_view = by_key.get(key)
        if per_view is None:
            out.append(_not_found(user_id, selection, catalog, ref_json))
            continue
        view_info = {}
        view_state = {}
        for i, v in enumerate(views):
            got = per_view[i]
            spec = catalog.views[v]
            if not got:
                view_info[v] = {"as_of": None, "event_timestamp": None, "status": NOT_FOUND,
                                "latest": False, "ttl_seconds": spec.ttl_seconds}
                view_state[v] = (NOT_FOUND, False, got)
                continue
            ts = next(iter(got.values()))[1]
            info = _view_info(spec, ts, reference)
            view_info[v] = info
            view_state[v] = (info["status"], info["latest"], got)
        features: dict[str, Any] = {}
        statuses: dict[str, str] = {}
        missing: list[str] = []
        stale: list[str] = []
        not_latest: list[str] = []
        for f in selection.features:
            vstatus, latest, got = view_state[f.view]
            cell = got.get(f.name)
            if cell is None:
                features[f.name] = None
                statuses[f.name] = NOT_FOUND
                missing.append(f.name)
                continue
            value = decode_value(cell[0])
            if vstatus == OUTSIDE_MAX_AGE:
                stale.append(f.name)
                statuses[f.name] = OUTSIDE_MAX_AGE
                features[f.name] = value if include_stale else None
            else:
                if not latest:
                    not_latest.append(f.name)
                statuses[f.name] = PRESENT if value is not None else NULL_VALUE
                features[f.name] = value
        out.append({
            "user_id": user_id, "found": True, "feature_service": selection.feature_service,
            "features": features, "status": statuses, "views": view_info,
            "missing": missing, "stale": stale, "not_latest": not_latest, "reference_as_of": ref_json,
        })
    return out


def _not_found(user_id: str, selection: Selection, catalog: Catalog, ref_json: str | None) -> dict:
    names = selection.names()
    return {
        "user_id": user_id, "found": False, "feature_service": selection.feature_service,
        "features": dict.fromkeys(names), "status": dict.fromkeys(names, NOT_FOUND),
        "views": {v: {"as_of": None, "event_timestamp": None, "status": NOT_FOUND, "latest": False,
                      "ttl_seconds": catalog.views[v].ttl_seconds} for v in selection.views},
        "missing": names, "stale": [], "not_latest": [], "reference_as_of": ref_json,
    }


# --- synchronous reader (CLI, tests, scripts) -------------------------------------------------

def read_online(settings: Settings, user_ids: Sequence[str], *, catalog: Catalog | None = None,
                feature_service: str | None = None, features: Sequence[str] | None = None,
                include_stale: bool = False, conn=None) -> list[dict]:
    """Online features of ``user_ids`` (results in the same order), straight from the online tables.

    ``catalog`` defaults to :func:`load_catalog` (which imports Feast: pass one in when
    calling repeatedly); ``conn`` to a new connection to ``settings``' database.
    """
    import psycopg

    catalog = catalog or load_catalog(settings)
    selection = catalog.select(feature_service, features)
    user_ids = list(user_ids)
    bad = [u for u in user_ids if not valid_user_id(u)]
    if bad:
        raise SelectionError(f"malformed user id {bad[0][:80]!r} (pattern {USER_ID_PATTERN})")
    keys = [serialize_user_key(u, catalog.entity_key_version) for u in user_ids]
    many = len(keys) != 1
    params = [list(dict.fromkeys(keys)) if many else keys[0]] * len(selection.views)
    try:
        owned = conn is None
        conn = conn or psycopg.connect(settings.conninfo, autocommit=True)
        try:
            with conn.cursor(binary=True) as cur:
                cur.execute(online_query(catalog, selection.views, many), params)
                rows = cur.fetchall()
                reference = cur.execute(reference_query(catalog)).fetchone()[0]
        finally:
            if owned:
                conn.close()
    except psycopg.Error as exc:
        raise OnlineReadError(f"cannot read the online store at {settings.host}:{settings.port} "
                              f"db={settings.database}: {exc}") from exc
    return assemble(catalog, selection, user_ids, keys, rows, reference, include_stale)


def print_online_features(settings: Settings, user_id: str) -> None:
    """`streamflow online-features USER_ID`: the user's ``churn_model_v1`` features as JSON."""
    result = read_online(settings, [user_id])[0]
    if not result["found"]:
        raise OnlineReadError(f"no online features for user {user_id!r} in db={settings.database} "
                              "(unknown user, or `make materialize` has not run)")
    print(json.dumps(result, indent=2, ensure_ascii=False, default=json_default))
