"""Command-line options and environment shared by the test folders."""

from __future__ import annotations

import os

# Tests read outputs back with `datasets`: never let it look anything up on the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_addoption(parser):
    """``--faults-report PATH``: the storage-fault rate test also writes its counts there."""
    parser.addoption("--faults-report", default=None, metavar="PATH",
                     help="write the 10%% storage-fault run's fault counts and outcome as JSON")
