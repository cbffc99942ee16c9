"""Where each mart lives, read from dbt's manifest.

Feast's sources must point at the relation dbt actually builds: the schema and
alias come from ``dbt_project/target/manifest.json`` (written by every dbt
command, ``dbt parse`` included), never from a hard-coded name, so a schema or
alias change in dbt moves Feast with it at the next ``apply``. The manifest also
carries the model's enforced contract (column names and types), which the tests
hold the Feast schemas against.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from streamflow.errors import StreamflowError
from streamflow.settings import REPO_ROOT, Settings

DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
DBT_PROFILES_DIR = REPO_ROOT / "profiles"


class ManifestError(StreamflowError):
    """dbt's manifest is missing or does not describe a mart Feast needs."""


def manifest_path() -> Path:
    # DBT_MANIFEST_PATH lets Feast read another build of the dbt project (e.g. a CI artefact).
    override = os.environ.get("DBT_MANIFEST_PATH", "").strip()
    return Path(override) if override else DBT_PROJECT_DIR / "target" / "manifest.json"


@dataclass(frozen=True)
class MartRelation:
    model: str
    schema: str
    identifier: str
    # column -> declared data_type (None when the model does not declare it)
    columns: dict[str, str | None]

    @property
    def sql(self) -> str:
        """Schema-qualified, quoted: safe in FROM whatever dbt names it."""
        return '"{}"."{}"'.format(self.schema.replace('"', '""'), self.identifier.replace('"', '""'))


_cache: dict[Path, tuple[float, dict]] = {}


def load_manifest(path: Path | None = None) -> dict:
    path = path or manifest_path()
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        raise ManifestError(
            f"dbt manifest not found at {path}: run `make build` (or `dbt parse --project-dir "
            f"dbt_project --profiles-dir profiles`) so Feast knows where the marts are") from None
    cached = _cache.get(path)
    if cached and cached[0] == mtime:
        return cached[1]
    manifest = json.loads(path.read_text())
    _cache[path] = (mtime, manifest)
    return manifest


def mart_relation(model: str, manifest: dict | None = None) -> MartRelation:
    """The relation dbt builds for ``model`` (its latest version if the model is versioned)."""
    manifest = manifest if manifest is not None else load_manifest()
    nodes = [n for n in manifest.get("nodes", {}).values()
             if n.get("resource_type") == "model" and n.get("name") == model]
    if len(nodes) > 1:
        nodes = [n for n in nodes if n.get("version") is None or n.get("version") == n.get("latest_version")]
    if len(nodes) != 1:
        raise ManifestError(f"dbt manifest {manifest_path()} has {len(nodes)} models named {model!r}; "
                            f"expected exactly one (see docs/contracts.md)")
    node = nodes[0]
    return MartRelation(
        model=model,
        schema=node["schema"],
        identifier=node.get("alias") or node["name"],
        columns={name: col.get("data_type") for name, col in node.get("columns", {}).items()},
    )


def ensure_manifest(settings: Settings) -> Path:
    """Run ``dbt parse`` when there is no manifest yet (a fresh clone before ``make build``)."""
    path = manifest_path()
    if path.exists():
        return path
    env = {**os.environ, **settings.env()}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("dbt")), "parse", "--quiet",
         "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROFILES_DIR)],
        capture_output=True, text=True, env=env, cwd=DBT_PROJECT_DIR)
    if result.returncode != 0 or not path.exists():
        raise ManifestError(f"`dbt parse` could not write {path}:\n"
                            f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return path
