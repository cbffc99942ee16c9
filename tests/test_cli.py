"""The `streamflow` command line refuses bad arguments and settings with a message, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def streamflow(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamflow.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


@pytest.mark.parametrize("args, env, message", [
    (["generate", "--out", "/tmp/unused", "--users", "0"], {}, "at least 1: '0'"),
    (["generate", "--out", "/tmp/unused", "--months", "-5"], {}, "at least 1: '-5'"),
    (["generate", "--out", "/proc/no/such/folder", "--users", "2", "--months", "1"], {},
     "cannot write sample exports to /proc/no/such/folder"),
    (["db", "status"], {"POSTGRES_PORT": "abc"}, "POSTGRES_PORT='abc': expected a port number"),
    (["serve", "--port", "99999"], {}, "expected a port number (1-65535)"),
    (["serve"], {"API_PORT": "abc"}, "API_PORT='abc': expected a port number"),
    (["serve"], {"API_WORKERS": "two"}, "API_WORKERS='two': expected int"),
    (["ingest", "/tmp", "--as-of", "yesterday"], {}, "not a date (YYYY-MM-DD): 'yesterday'"),
])
def test_bad_arguments_and_settings_are_refused_with_a_message(args, env, message):
    result = streamflow(*args, **env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
