"""The API's state and read path: a psycopg async pool, the cached registry catalog, and
the reference snapshot that staleness is measured against.

Failure model: every database step runs under one deadline (``API_DB_TIMEOUT``, default
0.8 s). A dead pooled connection (database restarted) is retried once after the pool has
dropped its dead connections; anything else becomes :class:`Unavailable` (HTTP 503). The
pool reconnects on demand, so the service recovers by itself when the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from streamflow.errors import StreamflowError
from streamflow.features import online
from streamflow.settings import Settings, environment, port_number

log = logging.getLogger("streamflow.api")

REGISTRY_FINGERPRINT_SQL = """
select (select count(*) from feature_views where project_id = %(p)s),
       (select max(last_updated_timestamp) from feature_views where project_id = %(p)s),
       (select count(*) from feature_services where project_id = %(p)s),
       (select max(last_updated_timestamp) from feature_services where project_id = %(p)s)
"""


class Unavailable(Exception):
    """The database or the registry cannot answer now (HTTP 503)."""


@dataclass(frozen=True)
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    pool_min: int = 2
    pool_max: int = 8
    db_timeout: float = 0.8  # seconds: the whole database part of one request
    refresh_seconds: float = 10.0  # registry change check and reference snapshot refresh
    access_log: bool = False
    feature_service: str = online.DEFAULT_FEATURE_SERVICE

    @classmethod
    def from_env(cls, environ=None, **overrides) -> ApiConfig:
        """API_* variables of ``environ`` (default: the process env over ``.env``, like every setting)."""
        env = environment(environ)

        def get(name, cast, default):
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                return cast(raw)
            except ValueError:
                raise StreamflowError(f"{name}={raw!r}: expected {cast.__name__}") from None

        values = dict(
            host=get("API_HOST", str, cls.host),
            port=get("API_PORT", lambda raw: port_number("API_PORT", raw), cls.port),
            workers=get("API_WORKERS", int, cls.workers),
            pool_min=get("API_POOL_MIN", int, cls.pool_min),
            pool_max=get("API_POOL_MAX", int, cls.pool_max),
            db_timeout=get("API_DB_TIMEOUT", float, cls.db_timeout),
            refresh_seconds=get("API_REFRESH_SECONDS", float, cls.refresh_seconds),
            access_log=get("API_ACCESS_LOG", lambda v: v.lower() in ("1", "true", "yes"), False),
            feature_service=get("API_FEATURE_SERVICE", str, cls.feature_service),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (PoolTimeout, TimeoutError)):
        return "database did not answer in time"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"database unavailable: {text[:300]}"


class OnlineService:
    def __init__(self, settings: Settings, config: ApiConfig):
        self.settings = settings
        self.config = config
        self.catalog: online.Catalog | None = None
        self.reference: datetime | None = None
        self.last_error: str | None = "starting: feature registry not loaded yet"
        self._fingerprint = None
        self._changes = None
        self._reference_at = 0.0
        self._pool: AsyncConnectionPool | None = None
        self._task: asyncio.Task | None = None

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self, wait_seconds: float = 20.0) -> None:
        self._pool = AsyncConnectionPool(
            self.settings.conninfo,
            kwargs={"autocommit": True, "connect_timeout": 2},
            min_size=self.config.pool_min, max_size=self.config.pool_max,
            timeout=self.config.db_timeout, reconnect_timeout=2.0, max_idle=300.0,
            name="streamflow-api", open=False,
        )
        await self._pool.open(wait=False)
        loaded = asyncio.Event()
        self._task = asyncio.create_task(self._maintain(loaded))
        try:  # be ready when the server says it started, but never refuse to start
            await asyncio.wait_for(loaded.wait(), wait_seconds)
        except TimeoutError:
            log.warning("starting without the feature registry: %s", self.last_error)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._pool:
            await self._pool.close(timeout=2.0)

    async def _maintain(self, loaded: asyncio.Event) -> None:
        """Load the catalog, then re-check the registry and the reference snapshot periodically."""
        delay = 0.5
        while True:
            try:
                await self.refresh()
                loaded.set()
                self.last_error = None
                delay = 0.5
                await asyncio.sleep(self.config.refresh_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = str(exc) if isinstance(exc, (Unavailable, online.StreamflowError)) \
                    else _reason(exc)
                log.warning("registry/reference refresh failed: %s", self.last_error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def refresh(self) -> None:
        project = self.catalog.project if self.catalog else online.PROJECT
        fingerprint = await self._run(lambda cur: cur.execute(REGISTRY_FINGERPRINT_SQL, {"p": project}))
        reloaded = self.catalog is None or fingerprint != self._fingerprint
        if reloaded:
            t0 = time.monotonic()
            self.catalog = await asyncio.to_thread(online.load_catalog, self.settings,
                                                   self.config.feature_service)
            self._fingerprint = fingerprint
            log.info("feature registry loaded in %.1fs: %d views, services %s",
                     time.monotonic() - t0, len(self.catalog.views), sorted(self.catalog.services))
        catalog = self.catalog
        text, params = online.changes_query(catalog)
        changes = await self._run(lambda cur: cur.execute(text, params))
        if (reloaded or changes != self._changes or self.reference is None
                or time.monotonic() - self._reference_at > 600):
            row = await self._run(lambda cur: cur.execute(online.reference_query(catalog)), timeout=10.0)
            self.reference = row[0] if row else None
            self._changes = changes
            self._reference_at = time.monotonic()

    # --- database access ----------------------------------------------------------------------

    async def _run(self, execute, *, fetch_all: bool = False, timeout: float | None = None):
        """Run ``execute(cursor)`` on a pooled connection within the deadline; one retry when
        the connection was dead (the database restarted since it was opened)."""
        if self._pool is None:
            raise Unavailable("service not started")
        timeout = timeout or self.config.db_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Waiting for a connection never takes longer than db_timeout, even for a long query:
        # with the database down, every request answers 503 within db_timeout.
        connect_by = loop.time() + min(timeout, self.config.db_timeout)
        for attempt in (1, 2):
            try:
                async with asyncio.timeout_at(deadline):
                    wait = max(min(deadline, connect_by) - loop.time(), 0.01)
                    async with self._pool.connection(timeout=wait) as conn, conn.cursor(binary=True) as cur:
                        await execute(cur)
                        return await cur.fetchall() if fetch_all else await cur.fetchone()
            except psycopg.OperationalError as exc:
                if attempt == 1 and deadline - loop.time() > 0.05:
                    log.info("retrying after a connection error: %s", exc)
                    try:
                        async with asyncio.timeout_at(deadline):
                            await self._pool.check()  # drop every dead idle connection
                    except Exception:
                        pass
                    continue
                raise Unavailable(_reason(exc)) from None
            except (PoolTimeout, TimeoutError) as exc:
                raise Unavailable(_reason(exc)) from None
            except psycopg.errors.UndefinedTable as exc:
                raise Unavailable(f"online store not ready ({_reason(exc).split(': ', 1)[-1]}): "
                                  "run `make apply materialize`") from None
            except psycopg.Error as exc:
                raise Unavailable(_reason(exc)) from None
        raise Unavailable("database unavailable")

    # --- the read path ------------------------------------------------------------------------

    def require_catalog(self) -> online.Catalog:
        if self.catalog is None:
            raise Unavailable(f"feature registry not loaded: {self.last_error}")
        return self.catalog

    async def features(self, user_ids: list[str], feature_service: str | None = None,
                       features: list[str] | None = None, include_stale: bool = False) -> tuple:
        """(selection, results) for ``user_ids`` in order. Raises SelectionError, Unavailable."""
        catalog = self.require_catalog()
        selection = catalog.select(feature_service, features)
        version = catalog.entity_key_version
        keys = [online.serialize_user_key(u, version) for u in user_ids]
        many = len(keys) != 1
        params = [list(dict.fromkeys(keys)) if many else keys[0]] * len(selection.views)
        query = online.online_query(catalog, selection.views, many)
        # A batch gets more time: about 2 ms per user on top of db_timeout (1000 users: 2.8 s).
        timeout = self.config.db_timeout + 0.002 * (len(keys) - 1)
        rows = await self._run(lambda cur: cur.execute(query, params, prepare=True), fetch_all=True,
                               timeout=timeout)
        return selection, online.assemble(catalog, selection, user_ids, keys, rows, self.reference,
                                          include_stale)

    async def readiness(self) -> dict:
        """Checks for /ready; raises Unavailable with the reason."""
        project = self.catalog.project if self.catalog else online.PROJECT
        row = await self._run(lambda cur: cur.execute(REGISTRY_FINGERPRINT_SQL, {"p": project}))
        if not row or not row[2]:
            raise Unavailable(f"feature registry has no feature services for project {project!r}: "
                              "run `make apply`")
        catalog = self.require_catalog()
        return {
            "database": "ok",
            "registry": {"project": catalog.project, "feature_views": row[0],
                         "feature_services": row[2], "default_feature_service": catalog.default_service},
            "reference_as_of": self.reference.date().isoformat() if self.reference else None,
        }
