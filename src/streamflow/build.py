"""Run the dbt project: raw -> staging views -> versioned monthly snapshot marts.

Both functions run dbt as any user would type it
(``dbt <cmd> --project-dir dbt_project --profiles-dir profiles``), in a
subprocess whose environment carries ``settings.env()``, so the profile's
``env_var('POSTGRES_*')`` point at the database of the given settings, never
at whatever this process happened to cache. dbt's output is streamed as it
comes.

The marts analyse themselves after every build (a post-hook in
``dbt_project.yml``), so the planner has statistics for Feast's queries.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path

import psycopg

from streamflow.errors import StreamflowError
from streamflow.settings import REPO_ROOT, Settings

DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
DBT_PROFILES_DIR = REPO_ROOT / "profiles"
DOCS_SITE_DIR = REPO_ROOT / "site" / "dbt-docs"  # git-ignored (`site/`)
DOCS_FILES = ("index.html", "static_index.html", "manifest.json", "catalog.json")
# Where other parts (streamflow.features.manifest) read the manifest from.
SHARED_MANIFEST = DBT_PROJECT_DIR / "target" / "manifest.json"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class BuildError(StreamflowError):
    """dbt failed; the message carries dbt's own error lines."""


def _dbt_executable() -> str:
    beside_python = Path(sys.executable).with_name("dbt")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("dbt")
    if not found:
        raise BuildError("dbt is not installed in this environment: run `make install`")
    return found


def target_dir(settings: Settings) -> Path:
    """dbt's target/log folder, one per server and database, so builds of different
    databases (parallel test sessions, a developer's own database) never share
    artifacts (partial parse state, run results). Inside the git-ignored target/."""
    name = f"{settings.host}-{settings.port}-{settings.database}"
    return DBT_PROJECT_DIR / "target" / re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _publish_manifest(target: Path) -> None:
    """Copy the fresh manifest.json to dbt's default place, atomically (readers
    never see a half-written file). Its content does not depend on the database."""
    manifest = target / "manifest.json"
    if manifest.exists():
        SHARED_MANIFEST.parent.mkdir(parents=True, exist_ok=True)
        partial = SHARED_MANIFEST.with_name(f".manifest.{os.getpid()}.json")
        shutil.copy2(manifest, partial)
        os.replace(partial, SHARED_MANIFEST)


def _require_raw_layer(settings: Settings) -> None:
    try:
        with psycopg.connect(settings.conninfo) as conn:
            exists = conn.execute("select to_regclass('raw.ingestion_log') is not null").fetchone()[0]
            months = conn.execute("select count(*) from raw.ingestion_log").fetchone()[0] if exists else 0
    except psycopg.OperationalError as exc:
        raise BuildError(f"cannot connect to PostgreSQL at {settings.host}:{settings.port} "
                         f"db={settings.database}: {exc}") from exc
    if not months:
        raise BuildError(f"no month has been loaded into the raw schema of database {settings.database!r}: "
                         "run `streamflow ingest-all` (make ingest) first")


def run_dbt(settings: Settings, *args: str, quiet: bool = False) -> list[str]:
    """Run ``dbt <args>`` on ``settings``' database, streaming its output.

    Returns dbt's output lines; raises :class:`BuildError` (with dbt's error
    lines) when dbt exits non-zero.
    """
    target = target_dir(settings)
    command = [_dbt_executable(), *args,
               "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROFILES_DIR)]
    env = {
        **os.environ,
        **settings.env(),
        "DBT_TARGET_PATH": str(target),
        "DBT_LOG_PATH": str(target / "logs"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    tail: deque[str] = deque(maxlen=200)
    lines: list[str] = []
    with subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not quiet:
                sys.stdout.write(line)
                sys.stdout.flush()
            clean = _ANSI.sub("", line.rstrip("\n"))
            lines.append(clean)
            tail.append(clean)
    if proc.returncode != 0:
        errors = _error_lines(list(tail))
        raise BuildError(
            f"`dbt {' '.join(args)}` failed (exit {proc.returncode}) on database {settings.database!r}:\n"
            + "\n".join(errors)
            + f"\n(full log: {target / 'logs' / 'dbt.log'})"
        )
    _publish_manifest(target)
    return lines


def _error_lines(tail: list[str]) -> list[str]:
    """The useful part of dbt's output: from its error summary on, else the last lines."""
    for marker in ("Completed with", "Encountered an error", "Runtime Error", "Compilation Error"):
        for i, line in enumerate(tail):
            if marker in line:
                return [t for t in tail[i:] if t.strip()][:60]
    return [t for t in tail if t.strip()][-30:]


def dbt_build(settings: Settings, *, full_refresh: bool = False) -> None:
    """``dbt build``: staging views, incremental monthly snapshot marts, unit and data tests.

    Only months whose raw load changed since the last build are (re)built; with
    ``full_refresh`` every mart is rebuilt from all months.
    """
    _require_raw_layer(settings)
    args = ["build"]
    if full_refresh:
        args.append("--full-refresh")
    run_dbt(settings, *args)


def dbt_docs(settings: Settings) -> Path:
    """``dbt docs generate``: dbt's documentation site (with the lineage graph).

    Writes it into ``site/dbt-docs/`` (git-ignored) and returns that folder.
    ``static_index.html`` there opens straight from disk; ``index.html`` needs
    its JSON beside it, e.g. ``python -m http.server -d site/dbt-docs``.
    The catalog reads the database, so build first for column types.
    """
    run_dbt(settings, "docs", "generate", "--static")
    source = target_dir(settings)
    DOCS_SITE_DIR.mkdir(parents=True, exist_ok=True)
    for name in DOCS_FILES:
        if not (source / name).exists():
            raise BuildError(f"dbt docs generate did not write {source / name}")
        shutil.copy2(source / name, DOCS_SITE_DIR / name)
    return DOCS_SITE_DIR
