"""FastAPI application: /health, /ready, GET /features/{user_id}, POST /features, /registry.

Responses are serialized once, straight to JSON bytes (no response-model re-validation on the
hot path); the models in :mod:`streamflow.api.models` document them in /docs.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from streamflow.api.models import (
    MAX_BATCH,
    BatchRequest,
    BatchResponse,
    ErrorBody,
    ReadyBody,
    UserFeatures,
)
from streamflow.api.service import ApiConfig, OnlineService, Unavailable
from streamflow.features import online
from streamflow.raw_schema import USER_ID_MAX_LENGTH, USER_ID_PATTERN
from streamflow.settings import Settings, load_settings

log = logging.getLogger("streamflow.api")

DESCRIPTION = f"""
Online features for prediction time, read from Feast's PostgreSQL online store (values
identical to Feast's `get_online_features`), for every feature of the `churn_model_v1`
feature service by default.

* **as_of**: every feature view reports the snapshot (month-end) its values come from.
* **missing**: a user absent from some views gets 200; those features are `null` with
  status `NOT_FOUND` and are listed in `missing`. A user with no row at all gets 404.
* **stale**: a value older than its view's TTL relative to `reference_as_of` (the newest
  materialized snapshot, not the wall clock) is not presented as current: it is `null`, its
  status is `OUTSIDE_MAX_AGE` and it is listed in `stale` (`include_stale=true` returns the old
  value, still marked). Feast's own online read ignores TTL. A value within its TTL but from
  an older snapshot than `reference_as_of` (the user is absent from the newest month in that
  view) is returned, as the point-in-time training join would, with its view marked
  `latest: false` and its features listed in `not_latest`.
* **user ids** match `{USER_ID_PATTERN}` (at most {USER_ID_MAX_LENGTH} characters);
  anything else is 422. Ids reach SQL only as bound parameters.
* **database down**: 503 with a JSON `detail` within about a second; the service recovers by
  itself when the database is back.
"""

ERRORS = {
    422: {"model": ErrorBody, "description": "Malformed user id, unknown feature service or feature"},
    503: {"model": ErrorBody, "description": "Database or feature registry unavailable "
                                             "(JSON detail; retry later)"},
}
EXAMPLE_USER = "7590-VHVEG"


def _json(content: bytes, status: int = 200, headers: dict | None = None) -> Response:
    return Response(content=content, status_code=status, media_type="application/json",
                    headers=headers)


def _unavailable(exc: Unavailable) -> Response:
    return _json(online.dumps({"detail": str(exc)}), 503, {"Retry-After": "1"})


def _internal_error(where: str) -> Response:
    log.exception("unexpected error in %s", where)
    return _json(online.dumps({"detail": "internal error"}), 500)


def _unprocessable(loc: list, msg: str) -> Response:
    return _json(online.dumps({"detail": [{"loc": loc, "msg": msg, "type": "value_error"}]}), 422)


class HotPath:
    """``GET /features/{user_id}`` without a query string, answered without FastAPI's routing and
    parameter machinery: the same id check, the same handler, the same bytes. Anything else
    (query parameters, malformed ids, other paths) goes to the FastAPI app as usual.
    The hot path is most of the traffic, and FastAPI's per-request work is most of its cost."""

    def __init__(self, app, handler):
        self.app = app
        self.handler = handler

    async def __call__(self, scope, receive, send):
        if (scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]
                and scope["path"].startswith("/features/")):
            user_id = scope["path"][10:]
            if online.valid_user_id(user_id):
                status, body, headers = await self.handler(user_id)
                raw_headers = [(b"content-type", b"application/json"),
                               (b"content-length", str(len(body)).encode())]
                raw_headers.extend((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())
                await send({"type": "http.response.start", "status": status, "headers": raw_headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None, config: ApiConfig | None = None) -> FastAPI:
    settings = settings or load_settings()
    config = config or ApiConfig.from_env()
    service = OnlineService(settings, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="StreamFlow online features", version="1.0", description=DESCRIPTION,
                  lifespan=lifespan, redirect_slashes=False)
    app.state.service = service

    async def one_user(user_id: str, feature_service: str | None = None, features: list[str] | None = None,
                       include_stale: bool = False) -> tuple[int, bytes, dict | None]:
        """(status, JSON body, extra headers) of GET /features/{user_id}; the id is valid."""
        try:
            _, results = await service.features([user_id], feature_service, features, include_stale)
        except online.SelectionError as exc:
            loc = ["query", "feature_service" if features is None else "features"]
            return 422, online.dumps({"detail": [{"loc": loc, "msg": str(exc), "type": "value_error"}]}), None
        except Unavailable as exc:
            return 503, online.dumps({"detail": str(exc)}), {"Retry-After": "1"}
        except Exception:
            log.exception("unexpected error in GET /features/{user_id}")
            return 500, online.dumps({"detail": "internal error"}), None
        result = results[0]
        if not result["found"]:
            return 404, online.dumps({"detail": f"no online features for user {user_id!r}",
                                      "user_id": user_id}), None
        return 200, online.dumps(result), None

    app.add_middleware(HotPath, handler=one_user)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        # FastAPI's format, with echoed inputs cut short (ids can be 10 kB of junk).
        errors = []
        for err in exc.errors():
            err = {k: v for k, v in err.items() if k in ("loc", "msg", "type", "input")}
            if isinstance(err.get("input"), str) and len(err["input"]) > 100:
                err["input"] = err["input"][:100] + "..."
            elif not isinstance(err.get("input"), (str, int, float, bool, type(None))):
                err.pop("input", None)
            errors.append(err)
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.get("/health", tags=["ops"], summary="Liveness (no I/O)")
    async def health():
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"], summary="Readiness: database and feature registry reachable",
             response_model=ReadyBody, responses={503: {"model": ReadyBody}})
    async def ready():
        try:
            checks = await service.readiness()
        except Unavailable as exc:
            return _json(online.dumps({"status": "unavailable", "detail": str(exc), "checks": {}}),
                         503, {"Retry-After": "1"})
        return _json(online.dumps({"status": "ready", "detail": None, "checks": checks}))

    @app.get("/registry", tags=["features"], summary="Feature services and views being served")
    async def registry():
        try:
            return _json(online.dumps(service.require_catalog().describe()))
        except Unavailable as exc:
            return _unavailable(exc)

    @app.get(
        "/features/{user_id}", tags=["features"], response_model=UserFeatures,
        summary="One user's online features",
        responses={404: {"model": ErrorBody, "description": "The user has no features at all",
                         "content": {"application/json": {"example": {
                             "detail": "no online features for user 'XXXX-NOPE'"}}}},
                   **ERRORS},
    )
    async def get_features(
        user_id: Annotated[str, Path(pattern=USER_ID_PATTERN, max_length=USER_ID_MAX_LENGTH,
                                     description="The user's id", examples=[EXAMPLE_USER])],
        feature_service: Annotated[str | None, Query(
            description="Feature service to read (default churn_model_v1)")] = None,
        features: Annotated[list[str] | None, Query(
            description="Explicit features instead of a service: view:feature or a bare name; "
                        "repeat or comma-separate", examples=[["subs_profile_fv:monthly_fee"]])] = None,
        include_stale: Annotated[bool, Query(
            description="Return values older than their view's TTL (still marked)")] = False,
    ):
        status, body, headers = await one_user(user_id, feature_service, features, include_stale)
        return _json(body, status, headers)

    @app.post(
        "/features", tags=["features"], response_model=BatchResponse,
        summary=f"Several users' online features (1 to {MAX_BATCH}), in request order",
        description="Unknown users are not an error here: their result has `found: false` and every "
                    "feature null with status NOT_FOUND.",
        responses=ERRORS,
    )
    async def post_features(body: BatchRequest):
        try:
            selection, results = await service.features(body.user_ids, body.feature_service,
                                                        body.features, body.include_stale)
        except online.SelectionError as exc:
            where = "feature_service" if body.features is None else "features"
            return _unprocessable(["body", where], str(exc))
        except Unavailable as exc:
            return _unavailable(exc)
        except Exception:
            return _internal_error("POST /features")
        return _json(online.dumps({"feature_service": selection.feature_service,
                                   "count": len(results), "results": results}))

    return app


def app_from_env() -> FastAPI:
    """uvicorn factory for multi-worker runs: settings and config from the environment."""
    return create_app(load_settings(), ApiConfig.from_env())
