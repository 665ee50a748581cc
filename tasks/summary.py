"""Run statistics from manifests: counts, errors by cause, metric means; and the markdown table."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

METRICS = ("known_fraction", "consistency", "psnr", "ssim", "psnr_hole", "lpips",
           "uncertainty_mean", "seconds")
SUMMARY_COLUMNS = ["id", "status", "error", "worker_node", "device", "flag", *METRICS]


def error_cause(message: str | None) -> str:
    """The short cause tag of an error message ('truncated: ...' -> 'truncated')."""
    if not message:
        return "unknown"
    head = message.split(":", 1)[0].strip()
    return head if head and " " not in head and len(head) <= 32 else "other"


class SummaryAccumulator:
    """Fold manifests in one at a time (bounded memory) into run statistics."""

    def __init__(self) -> None:
        """Start from zero."""
        self.rows = self.ok = self.error = 0
        self.causes: Counter[str] = Counter()
        self.sums: dict[str, float] = dict.fromkeys(METRICS, 0.0)
        self.counts: dict[str, int] = dict.fromkeys(METRICS, 0)
        self.nodes: Counter[str] = Counter()
        self.devices: Counter[str] = Counter()
        self.flags: Counter[str] = Counter()
        self.first_errors: list[dict[str, str]] = []

    def add(self, table: pa.Table) -> None:
        """Fold one manifest (or any table with SUMMARY_COLUMNS) in."""
        cols = {name: table[name].to_pylist() for name in SUMMARY_COLUMNS if name in table.schema.names}
        self.rows += table.num_rows
        for i, status in enumerate(cols["status"]):
            if status == "ok":
                self.ok += 1
                self.nodes[cols.get("worker_node", [None] * table.num_rows)[i] or "?"] += 1
                self.devices[cols.get("device", [None] * table.num_rows)[i] or "?"] += 1
                flag = cols.get("flag", [None] * table.num_rows)[i]
                if flag is not None:
                    self.flags[flag] += 1
            else:
                self.error += 1
                self.causes[error_cause(cols["error"][i])] += 1
                if len(self.first_errors) < 20:
                    self.first_errors.append({"id": cols["id"][i], "error": cols["error"][i] or ""})
        for metric in METRICS:
            for status, value in zip(cols["status"], cols.get(metric, [])):
                if status == "ok" and value is not None and math.isfinite(value):
                    self.sums[metric] += value
                    self.counts[metric] += 1

    def result(self) -> dict[str, Any]:
        """Counts, errors by cause, metric means over ok rows (None where none), nodes, devices."""
        means = {m: (self.sums[m] / self.counts[m] if self.counts[m] else None) for m in METRICS}
        return {"images": {"total": self.rows, "ok": self.ok, "error": self.error},
                "errors_by_cause": dict(self.causes.most_common()),
                "metric_means": means, "images_by_node": dict(self.nodes),
                "images_by_device": dict(self.devices), "flags": dict(self.flags),
                "first_errors": self.first_errors}


def summarize(tables: Iterable[pa.Table]) -> dict[str, Any]:
    """Statistics over several manifests."""
    acc = SummaryAccumulator()
    for table in tables:
        acc.add(table)
    return acc.result()


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_summary(summary: dict[str, Any]) -> str:
    """The run summary as a markdown table (the Prefect artifact)."""
    images, shards = summary["images"], summary.get("shards", {})
    lines = ["# Restora run summary", "", "| quantity | value |", "|---|---|"]
    rows = [("images", images["total"]), ("restored (ok)", images["ok"]),
            ("errors", images["error"]),
            ("shards", (f"{shards.get('total', '-')} planned, {shards.get('run', '-')} run, "
                        f"{shards.get('skipped', '-')} skipped, {shards.get('failed', 0)} failed")),
            ("throughput (images/s)", summary.get("throughput_images_per_s")),
            ("wall time (s)", summary.get("seconds")),
            ("config hash", summary.get("config_hash")), ("output", summary.get("output_uri"))]
    rows += [(f"damaged manifest moved aside: {d['shard_id']}", f"{d['moved_to']} ({d['reason']})")
             for d in summary.get("damaged_manifests", [])]
    rows += [(f"mean {k}", v) for k, v in summary["metric_means"].items() if v is not None]
    rows += [(f"errors: {k}", v) for k, v in summary["errors_by_cause"].items()]
    rows += [(f"flag: {k}", v) for k, v in sorted(summary.get("flags", {}).items())]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in rows]
    return "\n".join(lines) + "\n"
