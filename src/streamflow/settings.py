"""The one place every part of StreamFlow reads its configuration from.

Python code calls :func:`get_settings`; dbt reads the same values through
``env_var('POSTGRES_*')`` and Feast through ``${POSTGRES_*}`` in
``feature_store.yaml``: :meth:`Settings.export_env` puts them into the
environment of those tools before they run.

Precedence: process environment > ``.env`` file at the repo root > defaults.
When ``POSTGRES_HOST`` is unset the embedded PostgreSQL server (data in
``.pgdata/``) is used and started on demand; when it is set, that server is
used and the embedded one is never started.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from dotenv import dotenv_values

from streamflow.errors import StreamflowError

REPO_ROOT = Path(__file__).resolve().parents[2]

# A fixed, non-default port so the embedded server never collides with a
# system PostgreSQL on 5432.
EMBEDDED_PORT = 54329
EMBEDDED_HOST = "127.0.0.1"

REAL_EXPORTS_DIR = REPO_ROOT.parent / "shared" / "data" / "streamflow_seeds"
SAMPLE_DIR = REPO_ROOT / "data" / "sample"


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    user: str
    password: str
    database: str
    seeds_dir: Path
    embedded: bool
    pgdata: Path

    @property
    def conninfo(self) -> str:
        """libpq connection string; the session time zone is pinned to UTC."""
        return self.conninfo_in_zone("UTC")

    def conninfo_in_zone(self, timezone: str | None) -> str:
        """libpq connection string (values quoted, so any password works); ``timezone=None``
        leaves the session time zone to the server, as Feast's own connections do."""
        from psycopg.conninfo import make_conninfo

        options = {"options": f"-c timezone={timezone}"} if timezone else {}
        return make_conninfo(host=self.host, port=self.port, user=self.user, password=self.password,
                             dbname=self.database, connect_timeout=5, **options)

    def env(self) -> dict[str, str]:
        """The variables dbt profiles, feature_store.yaml and GX read."""
        return {
            "POSTGRES_HOST": self.host,
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_USER": self.user,
            "POSTGRES_PASSWORD": self.password,
            "POSTGRES_DB": self.database,
            "SEEDS_DIR": str(self.seeds_dir),
        }

    def export_env(self) -> None:
        os.environ.update(self.env())


def _default_seeds_dir() -> Path:
    return REAL_EXPORTS_DIR if REAL_EXPORTS_DIR.is_dir() else SAMPLE_DIR


def environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default: the process env) over the ``.env`` file at the repo root."""
    values: dict[str, str] = {
        k: v for k, v in dotenv_values(REPO_ROOT / ".env").items() if v is not None
    }
    values.update(os.environ if environ is None else environ)
    return values


def port_number(name: str, raw: str) -> int:
    """A TCP port from variable ``name``, or an error saying which variable is wrong."""
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise StreamflowError(f"{name}={raw!r}: expected a port number (1-65535)")
    return port


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``environ`` (default: the process env) over ``.env``."""
    values = environment(environ)
    host = values.get("POSTGRES_HOST", "").strip()
    embedded = not host
    seeds = values.get("SEEDS_DIR", "").strip()
    return Settings(
        host=host or EMBEDDED_HOST,
        port=port_number("POSTGRES_PORT", values.get("POSTGRES_PORT") or str(EMBEDDED_PORT)),
        user=values.get("POSTGRES_USER") or "streamflow",
        password=values.get("POSTGRES_PASSWORD") or "streamflow",
        database=values.get("POSTGRES_DB") or "streamflow",
        seeds_dir=Path(seeds).expanduser().resolve() if seeds else _default_seeds_dir(),
        embedded=embedded,
        pgdata=Path(values.get("PGDATA_DIR") or REPO_ROOT / ".pgdata").resolve(),
    )


@cache
def get_settings() -> Settings:
    return load_settings()
