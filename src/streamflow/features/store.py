"""Building Feast's configuration from the common settings, and `apply`.

``feature_repo/feature_store.yaml`` reads ``${POSTGRES_*}`` so that the Feast CLI
works after exporting those variables. Here the same file is read and its
variables are filled from the ``Settings`` passed in (not from whatever the
process environment holds), so every function acts on the database it is given.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import warnings

import yaml

from streamflow.features import FEAST_SCHEMA
from streamflow.settings import REPO_ROOT, Settings

REPO_PATH = REPO_ROOT / "feature_repo"
_VAR = re.compile(r"\$\{(\w+)\}")


def quiet_feast() -> None:
    """Silence what Feast prints on every command that is not news to the user.

    Feast warns at import time about optional components and logs its own
    INFO lines through the root logger; neither is actionable here.
    """
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"feast(\.|$)")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"feast(\.|$)")
    # Feast's PostgreSQL offline store reads a query's schema with pandas.read_sql on a
    # psycopg connection, which pandas warns about on every call; the result is fine.
    warnings.filterwarnings("ignore", message="pandas only supports SQLAlchemy connectable")
    for name in ("feast", "feast.infra", "feast.feature_store"):
        logging.getLogger(name).setLevel(logging.WARNING)


def repo_config(settings: Settings):
    from feast.repo_config import RepoConfig

    quiet_feast()
    env = settings.env()
    text = (REPO_PATH / "feature_store.yaml").read_text()
    raw = yaml.safe_load(_VAR.sub(lambda m: env.get(m.group(1), os.environ.get(m.group(1), "")), text))
    config = RepoConfig(**raw)
    config.repo_path = REPO_PATH
    return config


def get_store(settings: Settings):
    """A FeatureStore on ``settings``' database."""
    from feast import FeatureStore

    return FeatureStore(config=repo_config(settings))


@contextlib.contextmanager
def _in_repo():
    # Feast imports the repo's modules by their path relative to the working
    # directory, and they import each other by module name.
    old_cwd = os.getcwd()
    added = str(REPO_PATH) not in sys.path
    if added:
        sys.path.insert(0, str(REPO_PATH))
    os.chdir(REPO_PATH)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        if added:
            sys.path.remove(str(REPO_PATH))


def load_repo():
    """The feature repository's objects (Feast's RepoContents)."""
    from feast.repo_operations import parse_repo

    with _in_repo():
        return parse_repo(REPO_PATH)


def apply(settings: Settings) -> None:
    """`feast apply`: register the definitions and create the online tables."""
    from feast.repo_operations import apply_total_with_repo_instance

    from streamflow.features.manifest import ensure_manifest

    ensure_manifest(settings)
    _ensure_schema(settings)
    store = get_store(settings)
    repo = load_repo()
    out = io.StringIO()
    with _in_repo(), contextlib.redirect_stdout(out):
        apply_total_with_repo_instance(store, store.project, store.registry, repo,
                                       skip_source_validation=False)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    print("\n".join(lines) if lines else "No changes to the feature repository.")
    print(f"Applied project {store.project!r}: {len(repo.feature_views)} feature views, "
          f"{len(repo.feature_services)} feature services; registry in database {settings.database!r}")


def _ensure_schema(settings: Settings) -> None:
    """Create the online/offline scratch schema before Feast needs it on its search path."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(settings.conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(FEAST_SCHEMA)))
