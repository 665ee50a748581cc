"""Check that a finished restore job left committed manifests whose rows are all `status=ok`.

    python scripts/check_demo_output.py demo_out/restored [--expect 64]

Exit 0 when every manifest reads and every row is ok (and the count matches ``--expect``);
exit 1 naming the file or rows that are not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow.parquet as pq


def main(argv: list[str] | None = None) -> int:
    """Read ``<out>/manifests/*.parquet`` and report whether every row is ``ok``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output", type=Path, help="the job's output folder")
    ap.add_argument("--expect", type=int, default=64, help="number of rows expected (0: any)")
    args = ap.parse_args(argv)
    manifests = sorted((args.output / "manifests").glob("*.parquet"))
    if not manifests:
        print(f"check: no manifests under {args.output / 'manifests'}", file=sys.stderr)
        return 1
    rows = bad = 0
    for path in manifests:
        table = pq.read_table(path, columns=["id", "status", "error"], use_threads=False)
        for rid, status, error in zip(*(table.column(c).to_pylist() for c in table.column_names)):
            rows += 1
            if status != "ok":
                bad += 1
                print(f"check: {path.name}: {rid}: status={status} error={error}", file=sys.stderr)
    if bad or (args.expect and rows != args.expect):
        print(f"check: {rows} rows, {bad} not ok, expected {args.expect}", file=sys.stderr)
        return 1
    print(f"check: {len(manifests)} manifests, {rows} rows, all status=ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
