"""`restora` command line: restore | train | serve | inspect | methods.

This is the edge: it sets the environment Ray and Prefect read at import (quiet, offline-safe,
loopback for a local Ray), turns flags or a spec file into one validated JobSpec, and only then
imports the flow.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

_QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",
}
# Only for a Ray this process starts itself: stay on 127.0.0.1 and skip token auth.
_LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}


def prepare_environment(prefect_api_url: str | None = None, ray_address: str | None = None) -> None:
    """Set Ray/Prefect environment defaults; call before importing ray or prefect."""
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if prefect_api_url:
        os.environ["PREFECT_API_URL"] = prefect_api_url
    home = os.environ.get("PREFECT_HOME")
    if home:
        # Prefect makes only the last path component; a missing parent leaves the ephemeral
        # server without its database and the run times out instead of failing clearly.
        Path(home).expanduser().mkdir(parents=True, exist_ok=True)
    if not ray_address and not os.environ.get("RAY_ADDRESS"):
        for key, value in _LOCAL_RAY_ENV.items():
            os.environ.setdefault(key, value)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _pairs(items: list[str] | None, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"restora: error: {flag} expects KEY=VALUE, got '{item}'")
        key, value = item.split("=", 1)
        out[key.strip()] = _parse_value(value)
    return out


_SPEC_FLAGS = {  # flag dest -> JobSpec field
    "input": "input_uri", "output": "output_uri", "masks": "masks_uri",
    "input_format": "input_format", "task": "task", "method": "method", "steps": "steps",
    "corrections": "corrections", "seed": "seed", "prior": "prior", "prior_preset": "prior_preset",
    "size_policy": "size_policy", "inputs": "inputs", "batch_size": "batch_size",
    "shard_size": "shard_size", "num_actors": "num_actors", "cpus_per_actor": "cpus_per_actor",
    "gpus_per_actor": "gpus_per_actor", "max_pixels": "max_pixels",
    "lpips_weights": "lpips_weights", "max_concurrent_shards": "max_concurrent_shards",
    "precision": "precision", "samples": "samples", "estimate": "estimate",
    "uncertainty_threshold": "uncertainty_threshold",
}


def _add_spec_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", help="job spec file (JSON or YAML); flags override its fields")
    p.add_argument("--input", help="folder/prefix of images or Parquet shards (any fsspec URI)")
    p.add_argument("--output", help="output folder/prefix (images/, manifests/, summary.json)")
    p.add_argument("--masks", help="prefix of masks with the images' relative paths "
                                   "(pixel 0 = missing, non-zero = known)")
    p.add_argument("--input-format", choices=["auto", "images", "parquet"])
    p.add_argument("--task", help="inpaint (with masks), box, random, superres or denoise")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="task parameter (repeat)")
    p.add_argument("--method", help="restoration method (list them with `restora methods`)")
    p.add_argument("--method-param", action="append", metavar="KEY=VALUE",
                   help="method parameter, e.g. t0=0.1 (repeat; see `restora methods`)")
    p.add_argument("--steps", type=int, help="shorthand for --method-param steps=N")
    p.add_argument("--corrections", type=int, help="shorthand for --method-param corrections=N")
    p.add_argument("--seed", type=int)
    p.add_argument("--prior", help="shipped prior name (digits32) or a .safetensors/.pt URI")
    p.add_argument("--prior-preset")
    p.add_argument("--size-policy", choices=["error", "resize", "center-crop"])
    p.add_argument("--inputs", choices=["observed", "clean"],
                   help="observed: already degraded; clean: degrade and score (psnr, ssim)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--shard-size", type=int)
    p.add_argument("--num-actors", type=int)
    p.add_argument("--cpus-per-actor", type=float)
    p.add_argument("--gpus-per-actor", type=float)
    p.add_argument("--max-concurrent-shards", type=int)
    p.add_argument("--max-pixels", type=int)
    p.add_argument("--lpips-weights")
    p.add_argument("--precision", choices=["auto", "fp32", "tf32", "bf16"],
                   help="network precision (auto: bf16 autocast on GPUs, fp32 on CPUs)")
    p.add_argument("--save-inputs", action="store_true", default=None,
                   help="also write the degraded input and mask beside each output")
    p.add_argument("--samples", type=int, metavar="K",
                   help="samples per image (default 1); K > 1 records their spread per row")
    p.add_argument("--estimate", choices=["mean", "median", "sample"],
                   help="output for K > 1: per-pixel mean (default), median, or sample 0")
    p.add_argument("--save-uncertainty", action="store_true", default=None,
                   help="write each per-pixel std as a 16-bit PNG under uncertainty/ "
                        "(value/65535 = std on the [-1, 1] scale)")
    p.add_argument("--uncertainty-threshold", type=float, metavar="STD",
                   help="flag rows whose uncertainty_mean exceeds STD as 'uncertain'")
    p.add_argument("--endpoint-url", help="S3 endpoint (e.g. http://127.0.0.1:9000)")
    p.add_argument("--storage-option", action="append", metavar="KEY=VALUE",
                   help="fsspec storage option (repeat)")
    p.add_argument("--ray-address", help="Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--prefect-api-url", help="Prefect API (default: PREFECT_API_URL, else ephemeral)")


def _load_spec_file(path: str) -> dict[str, Any]:
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_load(text) or {}
    return json.loads(text)


def spec_from_args(args: argparse.Namespace):
    """One JobSpec from --spec and flags (flags win); raises JobSpecError with one message."""
    from tasks.spec import parse_spec

    data: dict[str, Any] = _load_spec_file(args.spec) if args.spec else {}
    for dest, field in _SPEC_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            data[field] = value
    if args.param:
        data["task_params"] = {**data.get("task_params", {}), **_pairs(args.param, "--param")}
    if args.method_param:
        data["method_params"] = {**data.get("method_params", {}),
                                 **_pairs(args.method_param, "--method-param")}
    if args.save_inputs:
        data["save_inputs"] = True
    if getattr(args, "save_uncertainty", None):
        data["save_uncertainty"] = True
    options = {**data.get("storage_options", {}), **_pairs(args.storage_option, "--storage-option")}
    if args.endpoint_url:
        options["endpoint_url"] = args.endpoint_url
    if options:
        data["storage_options"] = options
    return parse_spec(data)


class _ProgressBar:
    """Shard progress on a terminal: polls the committed manifests against the stored plan."""

    def __init__(self, spec, stream=sys.stderr, interval: float = 1.0):
        self.spec, self.stream, self.interval = spec, stream, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        if self.stream.isatty():
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
            self.stream.write("\n")

    def _run(self) -> None:
        from tasks.manifest import manifest_dir
        from tasks.planning import load_plan
        from tasks.storage import list_files, open_fs

        total = None
        while not self._stop.wait(self.interval):
            try:
                if total is None:
                    plan = load_plan(self.spec)
                    total = len(plan.shards) if plan else None
                    continue
                fs, root = open_fs(manifest_dir(self.spec.output_uri), self.spec.storage_options)
                done = min(len(list_files(fs, root, (".parquet",))), total)
            except Exception:  # noqa: BLE001, S112 - the bar is cosmetic
                continue
            width = 30
            filled = int(width * done / max(total, 1))
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} shards")
            self.stream.flush()


def _print_summary(summary: dict[str, Any]) -> None:
    images = summary["images"]
    print(f"restored {images['ok']}/{images['total']} images ({images['error']} errors) "
          f"in {summary['seconds']:.1f} s; shards: {summary['shards']}")
    if summary["errors_by_cause"]:
        print("errors by cause: " + ", ".join(f"{k}={v}" for k, v in summary["errors_by_cause"].items()))
    means = {k: round(v, 4) for k, v in summary["metric_means"].items() if v is not None}
    print(f"metric means: {means}")
    if summary.get("flags"):
        print("flags: " + ", ".join(f"{k}={v}" for k, v in sorted(summary["flags"].items())))
    print(f"images:    {summary['images_dir']}")
    print(f"manifests: {summary['manifests_dir']}")
    print(f"summary:   {summary['summary_uri']}")


def cmd_restore(args: argparse.Namespace) -> int:
    """Run the restore-dataset flow once, here."""
    from tasks.spec import JobSpecError
    from tasks.validate import validate_job

    try:
        spec = spec_from_args(args)
        validate_job(spec)
    except JobSpecError as exc:
        print(f"restora: error: {exc}", file=sys.stderr)
        return 2
    from flows.restore_dataset import restore_dataset

    with _ProgressBar(spec):
        state = restore_dataset(spec=spec, retry_failed=args.retry_failed,
                                overwrite=args.overwrite, ray_address=args.ray_address,
                                return_state=True)
    if state.is_completed():
        _print_summary(state.result())
        return 0
    try:
        state.result()
    except JobSpecError as exc:
        print(f"restora: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - report, do not dump a second traceback
        print(f"restora: the run failed: {exc}", file=sys.stderr)
    return 1


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the flow as a cron-scheduled deployment (blocks; Ctrl-C or SIGTERM stops it)."""
    from tasks.spec import JobSpecError

    try:
        spec = spec_from_args(args)
    except JobSpecError as exc:
        print(f"restora: error: {exc}", file=sys.stderr)
        return 2
    from flows.restore_dataset import restore_dataset

    params = {"spec": spec.model_dump(mode="json"), "retry_failed": args.retry_failed,
              "ray_address": args.ray_address}
    restore_dataset.serve(name=args.name, cron=args.cron, parameters=params,
                          description=f"restore {spec.input_uri} -> {spec.output_uri}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Summarise one manifest, or every manifest under an output folder."""
    from tasks.manifest import MANIFEST_COLUMNS, manifest_dir, read_manifest
    from tasks.storage import full_uri, list_files, open_fs
    from tasks.summary import summarize

    target = args.path
    fs, path = open_fs(target, _pairs(args.storage_option, "--storage-option"))
    if path.endswith(".parquet"):
        uris = [target]
    else:
        mfs, root = open_fs(manifest_dir(target), fs.storage_options)
        uris = [full_uri(mfs, f"{root}/{rel}") for rel in list_files(mfs, root, (".parquet",))]
    if not uris:
        print(f"restora: error: no manifests under '{target}'", file=sys.stderr)
        return 2
    tables = (read_manifest(u, fs.storage_options) for u in uris)
    summary = summarize(tables)
    summary["manifests"] = len(uris)
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
        return 0
    images = summary["images"]
    print(f"{len(uris)} manifest(s), {images['total']} rows: {images['ok']} ok, {images['error']} error")
    print(f"columns: {', '.join(MANIFEST_COLUMNS)}")
    for cause, n in summary["errors_by_cause"].items():
        print(f"  error {cause}: {n}")
    for name, value in summary["metric_means"].items():
        if value is not None:
            print(f"  mean {name}: {value:.4f}")
    for err in summary["first_errors"][: args.errors]:
        print(f"  {err['id']}: {err['error']}")
    return 0


def describe_methods(task: str | None = None) -> list[dict[str, Any]]:
    """Every registered method (or those doing ``task``): parameters, per-task defaults, cost."""
    from restora_core.samplers import REGISTRY

    out = []
    for entry in REGISTRY.values():
        tasks = [t for t in entry.tasks if task in (None, t)]
        if not tasks:
            continue
        out.append({
            "method": entry.name, "summary": entry.summary, "paper": entry.paper,
            "parameters": [vars(p) for p in entry.param_info()],
            "tasks": {t: {"params": entry.defaults(t), "nfe": entry.cost(t),
                          "source": entry.sources.get(t, entry.sources.get("defaults", ""))}
                      for t in tasks},
            "sources": dict(entry.sources),
        })
    return out


def cmd_methods(args: argparse.Namespace) -> int:
    """List the methods with their parameters, per-task defaults, cost and sources."""
    methods = describe_methods(args.task)
    if args.json:
        print(json.dumps(methods, indent=1))
        return 0
    for m in methods:
        print(f"{m['method']}: {m['summary']}")
        print(f"  paper: {m['paper']}")
        print("  parameters:")
        for p in m["parameters"]:
            print(f"    {p['name']} ({p['type']}, default {p['default']}): {p['help']}")
        print("  per task (nfe: network evaluations per image; denoising at sigma 0.2):")
        for task, info in m["tasks"].items():
            values = " ".join(f"{k}={v}" for k, v in info["params"].items())
            print(f"    {task:<9} {values}  nfe={info['nfe']}")
        print("  sources:")
        for key, text in m["sources"].items():
            print(f"    {key}: {text}")
        print()
    return 0


def cmd_train(args: argparse.Namespace, rest: list[str]) -> int:
    """Hand over to the training flow (flows/train_prior.py), imported only now."""
    try:
        from flows import train_prior
    except ImportError as exc:
        print(f"restora: error: the training flow is not available ({exc}); "
              "it lives in flows/train_prior.py", file=sys.stderr)
        return 2
    entry = getattr(train_prior, "main", None)
    if entry is None:
        print("restora: error: flows/train_prior.py defines no main(argv)", file=sys.stderr)
        return 2
    return int(entry(rest) or 0)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `restora`."""
    parser = argparse.ArgumentParser(prog="restora", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("restore", help="restore a dataset (one run, here)")
    _add_spec_arguments(p)
    p.add_argument("--retry-failed", action="store_true", help="redo only rows with status=error")
    p.add_argument("--overwrite", action="store_true", help="redo every shard")
    s = sub.add_parser("serve", help="serve the flow with a cron schedule against a Prefect server")
    _add_spec_arguments(s)
    s.add_argument("--cron", default="0 3 * * *", help="cron schedule (default: 03:00 daily)")
    s.add_argument("--name", default="restora-nightly", help="deployment name")
    s.add_argument("--retry-failed", action="store_true")
    i = sub.add_parser("inspect", help="summarise a manifest or an output folder")
    i.add_argument("path", help="a manifest .parquet or an output folder/prefix")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.add_argument("--errors", type=int, default=10, help="error rows to list")
    i.add_argument("--storage-option", action="append", metavar="KEY=VALUE")
    m = sub.add_parser("methods", help="list the methods, their parameters, defaults, cost, sources")
    m.add_argument("--task", help="only the methods doing this task, with its defaults")
    m.add_argument("--json", action="store_true", help="print the list as JSON")
    sub.add_parser("train", help="train a prior (flows/train_prior.py); args pass through",
                   add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `restora` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] == "train":
        prepare_environment()
        return cmd_train(argparse.Namespace(), argv[1:])
    args = parser.parse_args(argv)
    prepare_environment(getattr(args, "prefect_api_url", None), getattr(args, "ray_address", None))
    if args.command == "restore":
        return cmd_restore(args)
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "methods":
        return cmd_methods(args)
    return cmd_inspect(args)


if __name__ == "__main__":
    raise SystemExit(main())
