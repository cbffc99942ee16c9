"""The online feature API, end to end: a real uvicorn server (`streamflow serve`) on a free
port, over the shared pipeline's materialized database (real PostgreSQL, real Feast).

Tests that need data of their own (staleness) or a server they can stop (database down)
make it themselves; the shared database is only read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg
import pytest
from psycopg import sql

from streamflow import db
from streamflow.settings import Settings

KNOWN_USER = "7590-VHVEG"
HOSTILE_IDS = [
    "' OR '1'='1",
    "x';DROP TABLE users;--",
    "%2F",
    "7590 VHVEG",
    " 7590-VHVEG",
    "x" * 10_000,
    "a/../../etc/passwd",
    "é-ü",
    "..",
    "-leading-dash",
]


# --- running the API --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclasses.dataclass
class Api:
    url: str
    proc: subprocess.Popen
    log: Path

    def client(self, timeout: float = 10.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def run_api(settings: Settings, tmp_path: Path, ready: bool = True, **env):
    """`streamflow serve` on a free port against ``settings``' database, until ready."""
    port = free_port()
    log = tmp_path / f"api_{port}.log"
    environ = {**os.environ, **settings.env(), "API_PORT": str(port), "API_HOST": "127.0.0.1",
               "API_REFRESH_SECONDS": "2", **env}
    environ.pop("FEAST_REPO_PATH", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streamflow.cli", "serve"], env=environ,
                                stdout=out, stderr=subprocess.STDOUT)
    api = Api(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 120
        with api.client(timeout=5) as c:
            while True:
                assert proc.poll() is None, f"the API exited:\n{api.output()}"
                with contextlib.suppress(httpx.TransportError):
                    r = c.get("/ready" if ready else "/health")
                    if r.status_code == 200:
                        break
                assert time.monotonic() < deadline, f"the API never got ready:\n{api.output()}"
                time.sleep(0.3)
        yield api
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def api(materialized: Settings, tmp_path_factory):
    with run_api(materialized, tmp_path_factory.mktemp("api")) as running:
        yield running


@pytest.fixture(scope="module")
def client(api: Api):
    with api.client() as c:
        yield c


@pytest.fixture(scope="module")
def store(materialized: Settings):
    from streamflow.features.store import get_store

    return get_store(materialized)


def online_user_ids(settings: Settings) -> list[str]:
    with psycopg.connect(settings.conninfo) as conn:
        return [u for (u,) in conn.execute(
            "select distinct user_id from marts.subscriptions_profile_snapshots order by 1")]


def jsonable(value):
    """Feast's Python value as this API puts it in JSON."""
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z"
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def assert_no_nan(text: str) -> None:
    assert "NaN" not in text and '"nan"' not in text.lower() and "Infinity" not in text


def table_counts(settings: Settings) -> dict[str, int]:
    with psycopg.connect(settings.conninfo) as conn:
        tables = conn.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema')"
        ).fetchall()
        return {f"{s}.{t}": conn.execute(sql.SQL("select count(*) from {}").format(
            sql.Identifier(s, t))).fetchone()[0] for s, t in tables}


# --- liveness, readiness, docs ----------------------------------------------------------------

def test_health_and_ready(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["registry"]["default_feature_service"] == "churn_model_v1"
    assert body["checks"]["reference_as_of"] == "2024-02-29"


def test_openapi_docs_with_examples(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/health", "/ready", "/features/{user_id}", "/features"} <= set(spec["paths"])
    text = json.dumps(spec)
    assert KNOWN_USER in text and "OUTSIDE_MAX_AGE" in text
    param = spec["paths"]["/features/{user_id}"]["get"]["parameters"][0]
    assert param["schema"]["pattern"] and param["schema"]["maxLength"] == 64


# --- one user ---------------------------------------------------------------------------------

def test_known_user(client):
    r = client.get(f"/features/{KNOWN_USER}")
    assert r.status_code == 200, r.text
    assert_no_nan(r.text)
    body = r.json()
    f = body["features"]
    assert body["user_id"] == KNOWN_USER and body["feature_service"] == "churn_model_v1"
    assert f["months_active"] == 1 and type(f["months_active"]) is int
    assert f["monthly_fee"] == 29.85
    assert f["paperless_billing"] is True
    assert f["contract_type"] == "Month-to-month"
    assert f["signup_date"] == "2022-02-05T00:00:00Z"
    assert len(f) == 21
    assert body["reference_as_of"] == "2024-02-29"
    assert set(body["views"]) == {"subs_profile_fv", "usage_agg_30d_fv", "payments_agg_90d_fv",
                                  "support_agg_90d_fv", "user_profile_fv"}
    for view in body["views"].values():
        assert view["as_of"] == "2024-02-29" and view["status"] == "PRESENT" and view["latest"]
    assert body["missing"] == [] and body["stale"] == [] and body["not_latest"] == []
    assert set(body["status"].values()) <= {"PRESENT", "NULL_VALUE"}


def test_values_identical_to_feast(client, store, materialized):
    users = random.Random(6).sample(online_user_ids(materialized), 150)
    feast = store.get_online_features(features=store.get_feature_service("churn_model_v1"),
                                      entity_rows=[{"user_id": u} for u in users]).to_dict()
    nulls = 0
    for i, user in enumerate(users):
        r = client.get(f"/features/{user}")
        assert r.status_code == 200, r.text
        assert_no_nan(r.text)
        got = r.json()["features"]
        for name, value in got.items():
            expected = jsonable(feast[name][i])
            assert value == expected and type(value) is type(expected), (user, name, value, expected)
            nulls += value is None
    assert nulls, "the sample should hold some NULL cells (plan_stream_* of net_service = 'No')"


def test_feature_selection(client):
    r = client.get(f"/features/{KNOWN_USER}",
                   params={"features": ["subs_profile_fv:monthly_fee", "skips_7d"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body["features"]) == ["monthly_fee", "skips_7d"]
    assert set(body["views"]) == {"subs_profile_fv", "usage_agg_30d_fv"}
    assert body["feature_service"] is None
    r = client.get(f"/features/{KNOWN_USER}", params={"features": "monthly_fee,failed_payments_90d"})
    assert list(r.json()["features"]) == ["monthly_fee", "failed_payments_90d"]
    r = client.get(f"/features/{KNOWN_USER}", params={"feature_service": "churn_model_v1"})
    assert r.status_code == 200
    for params in ({"feature_service": "nope"}, {"features": "nope"}, {"features": "subs_profile_fv:nope"},
                   {"features": "nope_fv:monthly_fee"}):
        r = client.get(f"/features/{KNOWN_USER}", params=params)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["detail"]


def test_unknown_user_is_404(client):
    r = client.get("/features/0000-NOBODY")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json")
    assert "0000-NOBODY" in r.json()["detail"]


def test_hostile_ids_are_refused_and_change_nothing(client, materialized):
    before = table_counts(materialized)
    for user_id in HOSTILE_IDS:
        for path in (f"/features/{user_id}", "/features/" + quote(user_id, safe="")):
            r = client.get(path)
            assert r.status_code in (404, 422), (user_id[:40], r.status_code, r.text[:200])
            assert r.headers["content-type"].startswith("application/json")
            assert "Traceback" not in r.text and len(r.content) < 5000
        r = client.post("/features", json={"user_ids": [KNOWN_USER, user_id]})
        assert r.status_code == 422, (user_id[:40], r.text[:200])
    for empty in ("/features/", "/features/%20"):
        assert client.get(empty).status_code in (404, 422)
    assert table_counts(materialized) == before
    assert client.get(f"/features/{KNOWN_USER}").status_code == 200


# --- batches ----------------------------------------------------------------------------------

def test_batch_order_duplicates_and_unknown(client, materialized):
    users = random.Random(7).sample(online_user_ids(materialized), 40)
    asked = [*users[:20], "0000-NOBODY", users[0], *users[20:]]
    r = client.post("/features", json={"user_ids": asked})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(asked) and body["feature_service"] == "churn_model_v1"
    assert [x["user_id"] for x in body["results"]] == asked
    for result in body["results"]:
        assert result["found"] is (result["user_id"] != "0000-NOBODY")
        if result["found"]:
            assert result == client.get(f"/features/{result['user_id']}").json()
        else:
            assert set(result["status"].values()) == {"NOT_FOUND"}
            assert all(v is None for v in result["features"].values())


def test_batch_limits(client, materialized):
    users = online_user_ids(materialized)
    full = (users * (1000 // len(users) + 1))[:1000]
    r = client.post("/features", json={"user_ids": full})
    assert r.status_code == 200 and r.json()["count"] == 1000
    assert [x["user_id"] for x in r.json()["results"]] == full
    for bad in ({"user_ids": full + [users[0]]}, {"user_ids": []}, {}, {"user_ids": "7590-VHVEG"},
                {"user_ids": [KNOWN_USER], "unexpected": 1}):
        r = client.post("/features", json=bad)
        assert r.status_code == 422, (str(bad)[:80], r.text[:200])
    r = client.post("/features", json={"user_ids": [KNOWN_USER], "features": ["monthly_fee"]})
    assert r.json()["results"][0]["features"] == {"monthly_fee": 29.85}
    r = client.post("/features", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


# --- staleness and partial users --------------------------------------------------------------

REFERENCE = datetime(2024, 2, 29, tzinfo=timezone.utc)
LAST_MONTH = datetime(2024, 1, 31, tzinfo=timezone.utc)
TWO_MONTHS_AGO = datetime(2023, 12, 31, tzinfo=timezone.utc)


def _write_view(store, view, rows: list[tuple[str, datetime]]) -> None:
    import pandas as pd
    from feast.types import Bool, Float64, Int32, Int64, String, UnixTimestamp

    sample = {Int32: 7, Int64: 7, Float64: 1.25, Bool: True, String: "x",
              UnixTimestamp: datetime(2022, 1, 1, tzinfo=timezone.utc)}
    data = {"user_id": [u for u, _ in rows]}
    for f in view.features:
        data[f.name] = [sample[f.dtype]] * len(rows)
    data["event_timestamp"] = [ts for _, ts in rows]
    data["loaded_at"] = [ts for _, ts in rows]
    store.write_to_online_store(view.name, pd.DataFrame(data))


@pytest.fixture(scope="module")
def staleness_db(applied: Settings, tmp_path_factory):
    """A database of its own: the real registry (project feature repo), online rows written
    with Feast for users current, absent from the newest month, absent for two months,
    and present in some views only."""
    from conftest import recreate_database

    from streamflow.features import store as fstore

    s = recreate_database(applied, f"{applied.database}_api_stale")
    st = fstore.get_store(s)
    repo = fstore.load_repo()
    st.apply([*repo.entities, *repo.data_sources, *repo.feature_views, *repo.feature_services])
    views = {v.name: v for v in repo.feature_views}
    for name, view in views.items():
        rows = [("CUR-0001", REFERENCE), ("LAG-0001", LAST_MONTH), ("OLD-0001", TWO_MONTHS_AGO)]
        if name == "subs_profile_fv":
            rows += [("PART-0001", REFERENCE), ("MIX-0001", REFERENCE)]
        if name == "usage_agg_30d_fv":
            rows += [("MIX-0001", TWO_MONTHS_AGO)]
        _write_view(st, view, rows)
    yield s, st
    from conftest import _admin_conninfo

    with psycopg.connect(_admin_conninfo(applied), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(s.database)))


def test_stale_missing_and_not_latest_are_marked(staleness_db, tmp_path):
    s, st = staleness_db
    users = ["CUR-0001", "LAG-0001", "OLD-0001", "PART-0001", "MIX-0001"]
    feast = st.get_online_features(features=st.get_feature_service("churn_model_v1"),
                                   entity_rows=[{"user_id": u} for u in users]).to_dict()
    with run_api(s, tmp_path) as api, api.client() as c:
        res = {u: c.get(f"/features/{u}").json() for u in users}
        stale_values = {u: c.get(f"/features/{u}", params={"include_stale": "true"}).json() for u in users}
        assert c.get("/features/NONE-0001").status_code == 404

    for body in res.values():
        assert body["reference_as_of"] == "2024-02-29"
        assert_no_nan(json.dumps(body))

    cur = res["CUR-0001"]
    assert cur["stale"] == cur["missing"] == cur["not_latest"] == []
    assert cur["features"]["months_active"] == 7 and cur["features"]["monthly_fee"] == 1.25

    # Absent from the newest month, within the 31-day TTL: served, marked not latest.
    lag = res["LAG-0001"]
    assert lag["stale"] == [] and len(lag["not_latest"]) == 21
    assert all(v["as_of"] == "2024-01-31" and v["latest"] is False and v["status"] == "PRESENT"
               for v in lag["views"].values())
    assert lag["features"]["months_active"] == 7

    # Absent for two months: beyond the TTL relative to the newest snapshot -> null, OUTSIDE_MAX_AGE.
    old = res["OLD-0001"]
    assert len(old["stale"]) == 21 and all(v is None for v in old["features"].values())
    assert set(old["status"].values()) == {"OUTSIDE_MAX_AGE"}
    assert all(v["status"] == "OUTSIDE_MAX_AGE" and v["as_of"] == "2023-12-31" for v in old["views"].values())
    # ... though Feast's own online read still presents them as current:
    assert feast["months_active"][users.index("OLD-0001")] == 7
    assert stale_values["OLD-0001"]["features"]["months_active"] == 7
    assert stale_values["OLD-0001"]["status"]["months_active"] == "OUTSIDE_MAX_AGE"

    part = res["PART-0001"]
    assert part["features"]["months_active"] == 7 and part["views"]["subs_profile_fv"]["status"] == "PRESENT"
    assert part["features"]["failed_payments_90d"] is None and "failed_payments_90d" in part["missing"]
    assert part["views"]["payments_agg_90d_fv"] == {"as_of": None, "event_timestamp": None,
                                                    "status": "NOT_FOUND", "latest": False,
                                                    "ttl_seconds": 31 * 86400.0}
    assert len(part["missing"]) == 21 - 8

    mix = res["MIX-0001"]
    assert mix["features"]["months_active"] == 7 and mix["features"]["watch_hours_30d"] is None
    assert mix["stale"] == ["watch_hours_30d", "avg_session_mins_7d", "unique_devices_30d", "skips_7d",
                            "rebuffer_events_7d"]

    # Where nothing is withheld, values are Feast's, exactly.
    for i, u in enumerate(users):
        for name, value in stale_values[u]["features"].items():
            assert value == jsonable(feast[name][i]), (u, name)


# --- database down ----------------------------------------------------------------------------

def _clone_online_store(source: Settings, target: Settings) -> None:
    """Registry (public) and online tables (feast) of ``source`` into ``target`` with pg_dump."""
    dump = subprocess.run([db._bin("pg_dump"), "--no-owner", "--no-privileges", "-n", "public", "-n", "feast",
                           "-d", source.conninfo], capture_output=True, check=True)
    script = re.sub(rb"(?m)^CREATE SCHEMA (\w+);", rb"CREATE SCHEMA IF NOT EXISTS \1;", dump.stdout)
    done = subprocess.run([db._bin("psql"), "-v", "ON_ERROR_STOP=1", "-q", "-d", target.conninfo],
                          input=script, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def test_database_down_is_503_and_recovers(materialized: Settings, tmp_path):
    """A second embedded PostgreSQL of our own (the shared one is never stopped)."""
    pgdata = Path(tempfile.mkdtemp(prefix="sf_api_pg_")) / "pgdata"
    own = dataclasses.replace(materialized, port=free_port(), pgdata=pgdata, database="sf_api_down",
                              embedded=True)
    try:
        db.start_embedded(own)
        _clone_online_store(materialized, own)
        with run_api(own, tmp_path, API_DB_TIMEOUT="0.8") as api, api.client(timeout=10) as c:
            assert c.get(f"/features/{KNOWN_USER}").json()["features"]["months_active"] == 1
            db.stop_embedded(own)
            for path in (f"/features/{KNOWN_USER}", "/ready"):
                for _ in range(3):
                    r = c.get(path)
                    assert r.status_code == 503, (path, r.text)
                    assert r.headers["content-type"].startswith("application/json")
                    assert r.json()["detail"] and "Traceback" not in r.text
            r = c.post("/features", json={"user_ids": [KNOWN_USER]})
            assert r.status_code == 503 and r.json()["detail"]
            assert c.get("/health").status_code == 200

            db.start_embedded(own)
            deadline = time.monotonic() + 60
            while (r := c.get(f"/features/{KNOWN_USER}")).status_code != 200:
                assert r.status_code == 503, r.text
                assert time.monotonic() < deadline, "the API did not recover"
                time.sleep(0.2)
            assert r.json()["features"]["months_active"] == 1
            assert c.get("/ready").status_code == 200
            assert api.proc.poll() is None  # the same process: no restart
            assert "Traceback" not in api.output()
    finally:
        with contextlib.suppress(Exception):
            db.stop_embedded(own)
        shutil.rmtree(pgdata.parent, ignore_errors=True)

