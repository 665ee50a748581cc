"""Prefect flows and the `restora` command line."""
