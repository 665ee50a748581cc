"""Command-line options shared by the test folders."""

from __future__ import annotations


def pytest_addoption(parser):
    """``--faults-report PATH``: the storage-fault rate test also writes its counts there."""
    parser.addoption("--faults-report", default=None, metavar="PATH",
                     help="write the 10%% storage-fault run's fault counts and outcome as JSON")
