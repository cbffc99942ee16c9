"""Shared fixtures: a real PostgreSQL, test databases, export folders, and the
pipeline stages (ingest -> dbt build -> validate -> feast apply -> materialize)
run once per session on the shared test database.

Tests that change data get a database of their own (``fresh_db``) so the
shared one stays exactly as the pipeline left it.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import socket
import tempfile
from datetime import date
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from streamflow import db
from streamflow.settings import REAL_EXPORTS_DIR, Settings, load_settings

REAL_AS_OF = {"month_000": date(2024, 1, 31), "month_001": date(2024, 2, 29)}
SAMPLE_USERS = 400
SAMPLE_MONTHS = 3


def _admin_conninfo(s: Settings) -> str:
    if s.embedded:
        return f"host={s.host} port={s.port} user={db.SUPERUSER} dbname=postgres connect_timeout=5"
    return dataclasses.replace(s, database="postgres").conninfo


def recreate_database(base: Settings, name: str) -> Settings:
    """Drop (if present) and create database ``name``; settings pointing at it."""
    with psycopg.connect(_admin_conninfo(base), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("create database {} owner {}").format(
            sql.Identifier(name), sql.Identifier(base.user)))
    return dataclasses.replace(base, database=name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL for the session, as settings for its main database.

    With POSTGRES_HOST set, that server. Otherwise a private embedded server in a
    temporary folder on a free port, so the suite never touches the data of
    `make all` and never collides with a server already running.
    """
    configured = load_settings()
    if not configured.embedded:
        yield db.ensure_up(configured)
        return
    pgdata = Path(tempfile.mkdtemp(prefix="streamflow-test-pg-"))
    private = dataclasses.replace(configured, pgdata=pgdata / "data", port=_free_port())
    try:
        yield db.ensure_up(private)
    finally:
        db.stop_embedded(private)
        shutil.rmtree(pgdata, ignore_errors=True)


@pytest.fixture(scope="session")
def test_db(pg_server: Settings) -> Settings:
    """The shared test database, recreated empty at the start of the session."""
    s = recreate_database(pg_server, f"{pg_server.database}_test")
    os.environ.update(s.env())  # for any tool a test starts as a subprocess
    return s


_fresh_counter = itertools.count()


@pytest.fixture
def fresh_db(pg_server: Settings):
    """A new empty database for one test (dropped afterwards)."""
    s = recreate_database(pg_server, f"{pg_server.database}_t{os.getpid()}_{next(_fresh_counter)}")
    yield s
    with psycopg.connect(_admin_conninfo(pg_server), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(s.database)))


@pytest.fixture(scope="session")
def real_seeds() -> Path:
    if not REAL_EXPORTS_DIR.is_dir():
        pytest.skip(f"real exports not found at {REAL_EXPORTS_DIR}")
    return REAL_EXPORTS_DIR


@pytest.fixture(scope="session")
def sample_seeds(tmp_path_factory) -> Path:
    from streamflow.generate import generate

    out = tmp_path_factory.mktemp("sample_exports")
    generate(out, users=SAMPLE_USERS, months=SAMPLE_MONTHS, seed=7)
    return out


@pytest.fixture(scope="session")
def pipeline_seeds(tmp_path_factory) -> Path:
    """What the shared pipeline runs on: the real exports when present, else generated data."""
    if REAL_EXPORTS_DIR.is_dir():
        return REAL_EXPORTS_DIR
    from streamflow.generate import generate

    out = tmp_path_factory.mktemp("pipeline_exports")
    generate(out, users=SAMPLE_USERS, months=2, seed=11)
    return out


# --- the pipeline on the shared test database, one stage per fixture --------------------------

@pytest.fixture(scope="session")
def ingested(test_db: Settings, pipeline_seeds: Path) -> Settings:
    from streamflow.ingest import ingest_all

    ingest_all(test_db, pipeline_seeds)
    return test_db


@pytest.fixture(scope="session")
def built(ingested: Settings) -> Settings:
    from streamflow.build import dbt_build

    dbt_build(ingested)
    return ingested


@pytest.fixture(scope="session")
def validated(built: Settings) -> Settings:
    from streamflow.validation import validate

    assert validate(built), "the pipeline's own data must pass validation"
    return built


@pytest.fixture(scope="session")
def applied(validated: Settings) -> Settings:
    from streamflow.features.store import apply

    apply(validated)
    return validated


@pytest.fixture(scope="session")
def materialized(applied: Settings) -> Settings:
    from streamflow.features.materialize import materialize

    materialize(applied)
    return applied
