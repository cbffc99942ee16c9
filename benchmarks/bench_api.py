"""Benchmark: GET one user's online features over HTTP, four ways, side by side.

  api      this project's API (`streamflow serve`: FastAPI, async psycopg pool, direct decode)
  seed     the seed-style endpoint: FastAPI calling FeatureStore.get_online_features per request
  feast    Feast's own `feast serve` (POST /get-online-features)
  raw      the floor: FastAPI + the same async pool running the same parameterized SQL lookup
           (one UNION ALL over the views' online tables), returning the raw rows undecoded

Every server runs with one worker, access log off, uvloop/httptools where we choose. All are
started, warmed up, then loaded in interleaved rounds (medians reported, so background load on
a shared machine hits each alike) with random real user ids at concurrency 1 and 16 from a
bounded load generator on loopback: `wrk` when installed (Debian package `wrk`), else a small
asyncio HTTP/1.1 keep-alive client. Before the load, the API's values for a sample of
users are compared with Feast's get_online_features (must be identical).

    .venv/bin/python benchmarks/bench_api.py [--rounds 3] [--duration 5] [--only api,raw] [--json out.json]

Needs `make all` (or apply + materialize) on the configured database first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEASURED_BASELINE = {  # /work/shared/notes/measured-facts.md, concurrency 16, same kind of machine
    "seed": (674, 71.0), "feast": (392, 698.0), "raw": (1796, 27.0)}
TARGETS = ("api", "seed", "feast", "raw")


# --- the comparison servers (run in a subprocess of this script) -----------------------------

def seed_app():
    """The seed-style endpoint: Feast's get_online_features per request."""
    from fastapi import FastAPI, HTTPException

    from streamflow.features.store import get_store
    from streamflow.settings import load_settings

    store = get_store(load_settings())
    service = store.get_feature_service("churn_model_v1")
    app = FastAPI()

    @app.get("/features/{user_id}")
    def features(user_id: str):
        out = store.get_online_features(features=service, entity_rows=[{"user_id": user_id}]).to_dict()
        values = {k: v[0] for k, v in out.items() if k != "user_id"}
        if all(v is None for v in values.values()):
            raise HTTPException(404, "not found")
        return {"user_id": user_id, "features": values}

    return app


def raw_app():
    """The floor: the same SQL as the API (bound parameters, prepared), rows returned undecoded."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.responses import Response
    from psycopg_pool import AsyncConnectionPool

    from streamflow.features import online
    from streamflow.settings import load_settings

    settings = load_settings()
    catalog = online.load_catalog(settings)
    selection = catalog.select()
    query = online.online_query(catalog, selection.views, many=False)
    pool = AsyncConnectionPool(settings.conninfo, kwargs={"autocommit": True}, min_size=2, max_size=8,
                               open=False)

    @asynccontextmanager
    async def lifespan(app):
        await pool.open(wait=True)
        yield
        await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/features/{user_id}")
    async def features(user_id: str):
        key = online.serialize_user_key(user_id)
        async with pool.connection() as conn, conn.cursor(binary=True) as cur:
            await cur.execute(query, [key] * len(selection.views), prepare=True)
            rows = await cur.fetchall()
        body = json.dumps({"user_id": user_id, "rows": [[r[2], r[3].hex()] for r in rows]})
        return Response(body, media_type="application/json", status_code=200 if rows else 404)

    return app


def run_server(kind: str, port: int) -> None:
    import uvicorn

    app = seed_app() if kind == "seed" else raw_app()
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", access_log=False,
                log_level="warning")


# --- helpers ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def online_user_ids(settings, catalog) -> list[str]:
    """Every user in the online store (decoded from the serialized entity keys)."""
    import psycopg
    from psycopg import sql

    view = catalog.views[catalog.select().views[0]]
    with psycopg.connect(settings.conninfo) as conn:
        keys = [bytes(k) for (k,) in conn.execute(sql.SQL("select distinct entity_key from {}").format(
            sql.Identifier(view.schema, view.table)))]
    header = 4 + 4 + 4 + len(b"user_id") + 4 + 4
    return sorted(k[header:].decode() for k in keys)


def check_identical(settings, users: list[str], url: str) -> str:
    """The API's values for ``users`` against Feast's get_online_features, value by value."""
    import httpx

    from streamflow.features.store import get_store

    store = get_store(settings)
    feast = store.get_online_features(features=store.get_feature_service("churn_model_v1"),
                                      entity_rows=[{"user_id": u} for u in users]).to_dict()
    compared = 0
    with httpx.Client(base_url=url, timeout=10) as client:
        results = client.post("/features", json={"user_ids": users, "include_stale": True}).json()["results"]
    for i, result in enumerate(results):
        for name, value in result["features"].items():
            expected = feast[name][i]
            if isinstance(expected, datetime):
                expected = expected.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z"
            if isinstance(expected, float) and not math.isfinite(expected):
                expected = None
            if value != expected or type(value) is not type(expected):
                raise SystemExit(f"MISMATCH {users[i]} {name}: api={value!r} feast={expected!r}")
            compared += 1
    return f"{len(users)} users x {compared // max(len(users), 1)} features identical to Feast's"


@contextlib.contextmanager
def server(kind: str, settings, port: int, log_dir: Path):
    env = {**os.environ, **settings.env()}
    if kind == "api":
        cmd = [sys.executable, "-m", "streamflow.cli", "serve", "--port", str(port), "--workers", "1"]
        ready = "/ready"
    elif kind == "feast":
        feast = str(Path(sys.executable).parent / "feast")
        cmd = [feast, "-c", str(REPO / "feature_repo"), "serve", "-h", "127.0.0.1", "-p", str(port),
               "--no-access-log"]
        ready = "/health"
    else:
        cmd = [sys.executable, __file__, "--run-server", kind, "--port", str(port)]
        ready = "/docs"
    with open(log_dir / f"{kind}.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        import httpx

        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{kind} server exited:\n{(log_dir / f'{kind}.log').read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}{ready}", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"{kind} server never got ready")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


# --- load generators -------------------------------------------------------------------------

WRK_SCRIPT = """
local ids = {}
for line in io.lines(os.getenv("BENCH_IDS")) do ids[#ids+1] = line end
math.randomseed(tonumber(os.getenv("BENCH_SEED")))
local post = os.getenv("BENCH_FEAST") == "1"
request = function()
  local id = ids[math.random(#ids)]
  if post then
    return wrk.format("POST", "/get-online-features", {["Content-Type"]="application/json"},
      '{"feature_service":"churn_model_v1","entities":{"user_id":["' .. id .. '"]}}')
  end
  return wrk.format("GET", "/features/" .. id)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %.3f %.3f %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""


def load_wrk(url: str, kind: str, ids_file: Path, concurrency: int, duration: float, tmp: Path) -> dict:
    script = tmp / "bench.lua"
    script.write_text(WRK_SCRIPT)
    env = {**os.environ, "BENCH_IDS": str(ids_file), "BENCH_SEED": str(random.randrange(1 << 30)),
           "BENCH_FEAST": "1" if kind == "feast" else "0"}
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{int(duration)}s", "--timeout", "10s",
                          "-s", str(script), url], capture_output=True, text=True, env=env, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT"))
    n, dur_us, p50, p99, errors, non2xx = line.split()[1:]
    return {"requests": int(n), "rps": int(n) / (int(dur_us) / 1e6), "p50_ms": float(p50) / 1000,
            "p99_ms": float(p99) / 1000, "errors": int(errors) + int(non2xx)}


async def _load_async(url: str, kind: str, ids: list[str], concurrency: int, duration: float) -> dict:
    """Bounded asyncio client: ``concurrency`` keep-alive connections, one request in flight each."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + duration

    async def worker():
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        while time.perf_counter() < stop:
            uid = random.choice(ids)
            if kind == "feast":
                body = json.dumps({"feature_service": "churn_model_v1",
                                   "entities": {"user_id": [uid]}}).encode()
                req = (f"POST /get-online-features HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
                       f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
            else:
                req = f"GET /features/{uid} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            t0 = time.perf_counter()
            try:
                writer.write(req)
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(x.split(b":")[1]) for x in head.split(b"\r\n")
                              if x.lower().startswith(b"content-length"))
                await reader.readexactly(length)
            except (asyncio.IncompleteReadError, ConnectionError):
                # The server closed the connection (gunicorn's worker recycling under
                # `feast serve`): an error, then a new connection, as a real client would.
                errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, int(port))
                continue
            latencies.append(time.perf_counter() - t0)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100)
    return {"requests": len(latencies), "rps": len(latencies) / elapsed, "p50_ms": q[49] * 1000,
            "p99_ms": q[98] * 1000, "errors": errors}


def load(url, kind, ids, ids_file, concurrency, duration, tmp) -> dict:
    if shutil.which("wrk"):
        return load_wrk(url, kind, ids_file, concurrency, duration, tmp)
    return asyncio.run(_load_async(url, kind, ids, concurrency, duration))


# --- main ------------------------------------------------------------------------------------

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported (default 3)")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--only", default=",".join(TARGETS), help="comma-separated subset of " + ",".join(TARGETS))
    p.add_argument("--check-users", type=int, default=200, help="users compared with Feast first")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--run-server", choices=["seed", "raw"], help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run_server:
        run_server(args.run_server, args.port)
        return 0

    from streamflow.db import ensure_up
    from streamflow.features import online
    from streamflow.features.store import quiet_feast
    from streamflow.settings import load_settings

    quiet_feast()
    settings = ensure_up(load_settings())
    catalog = online.load_catalog(settings)
    ids = online_user_ids(settings, catalog)
    if not ids:
        raise SystemExit(f"no users in the online store of db={settings.database}: run `make all`")
    tmp = Path(tempfile.mkdtemp(prefix="bench_api_"))
    ids_file = tmp / "ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    generator = "wrk" if shutil.which("wrk") else "asyncio client"
    print(f"{len(ids)} users in the online store of db={settings.database}; load generator: {generator}; "
          f"{args.rounds} rounds x {args.duration:.0f}s per endpoint and concurrency; "
          f"{os.cpu_count()} CPUs shared by generator, server and database\n",
          flush=True)

    # All servers up at once (an idle one costs nothing), measured in interleaved rounds so that
    # drifting background load on the shared machine hits every endpoint alike; medians reported.
    kinds = [k for k in TARGETS if k in args.only.split(",")]
    runs: dict[str, dict[int, list[dict]]] = {k: {1: [], 16: []} for k in kinds}
    with contextlib.ExitStack() as stack:
        urls = {k: stack.enter_context(server(k, settings, free_port(), tmp)) for k in kinds}
        if "api" in urls:
            sample = random.Random(1).sample(ids, min(args.check_users, len(ids)))
            print("values:", check_identical(settings, sample, urls["api"]), flush=True)
        for kind, url in urls.items():
            load(url, kind, ids, ids_file, 16, args.warmup, tmp)
        for r in range(args.rounds):
            for c in (1, 16):
                for kind, url in urls.items():
                    m = load(url, kind, ids, ids_file, c, args.duration, tmp)
                    runs[kind][c].append(m)
                    print(f"  round {r + 1} {kind:6s} c={c:2d}: {m['rps']:7.0f} req/s "
                          f"p50 {m['p50_ms']:7.2f} ms "
                          f"p99 {m['p99_ms']:8.2f} ms errors {m['errors']}", flush=True)
    results: dict[str, dict] = {
        k: {c: {key: statistics.median(m[key] for m in ms) for key in ("rps", "p50_ms", "p99_ms")}
            | {"errors": sum(m["errors"] for m in ms), "rounds": ms} for c, ms in per.items()}
        for k, per in runs.items()}

    print("\n| endpoint | c=1 req/s | c=1 p50 ms | c=1 p99 ms | c=16 req/s | c=16 p50 ms | c=16 p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    names = {"api": "this API", "seed": "(a) FastAPI + get_online_features", "feast": "(b) feast serve",
             "raw": "(c) raw SQL behind FastAPI (floor)"}
    for kind, r in results.items():
        print(f"| {names[kind]} | {r[1]['rps']:.0f} | {r[1]['p50_ms']:.2f} | {r[1]['p99_ms']:.2f} | "
              f"{r[16]['rps']:.0f} | {r[16]['p50_ms']:.2f} | {r[16]['p99_ms']:.2f} |")
    if "api" in results:
        api = results["api"][16]
        if "seed" in results:
            print(f"\nthis API vs (a) at c=16: {api['rps'] / results['seed'][16]['rps']:.2f}x req/s "
                  f"(target >= 2x)")
        if "raw" in results:
            print(f"this API p99 vs (c) at c=16: {api['p99_ms'] / results['raw'][16]['p99_ms']:.2f}x "
                  f"(target <= 1.5x); req/s {api['rps'] / results['raw'][16]['rps']:.2f}x of the floor")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"generator": generator, "duration_s": args.duration,
                                         "results": results}, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
