"""Command-line options and environment shared by the test folders, and this test run's Ray
token."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

# Ray keeps its default token authentication in the tests. The run's token lives in a file of
# its own (RAY_AUTH_TOKEN_PATH, inherited by every child process), so a test run neither writes
# ~/.ray/auth_token nor races another run that is making it.
if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
    _TOKEN_FILE = Path(tempfile.mkdtemp(prefix="rtok-")) / "ray_auth_token"
    _TOKEN_FILE.write_text(secrets.token_hex(32))
    _TOKEN_FILE.chmod(0o600)
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(_TOKEN_FILE)

# Tests read outputs back with `datasets`: never let it look anything up on the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_addoption(parser):
    """``--faults-report PATH``: the storage-fault rate test also writes its counts there."""
    parser.addoption("--faults-report", default=None, metavar="PATH",
                     help="write the 10%% storage-fault run's fault counts and outcome as JSON")
