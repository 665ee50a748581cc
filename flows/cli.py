"""`restora` command line: restore | train | serve | inspect | methods | tasks.

This is the edge: it sets the environment Ray and Prefect read at import (quiet, offline-safe,
loopback for a local Ray), turns flags or a spec file into one validated JobSpec, and only then
imports the flow.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

_QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",
}
# Only for a Ray this process starts itself: stay on 127.0.0.1. Ray 2.59+ protects such a Ray
# with a token of its own (~/.ray/auth_token, or RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH).
_LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# Where a Ray token can come from. Joining a cluster by address, Ray sends its token only in
# token mode, so a token given in the environment turns that mode on.
_RAY_TOKEN_VARS = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


# Exit codes of `restora restore` (docs/running.md; the restore --help epilog says them too).
EXIT_OK = 0  # the job completed; rows may have status=error
EXIT_FAILED = 1  # the run failed: shards failed, the output's lease is held or lost, a crash
EXIT_USAGE = 2  # bad flags (argparse's own code) or a job spec that cannot run
EXIT_NOTHING_RESTORED = 3  # the job completed but every row is an error
_EXIT_CODES_HELP = f"""exit codes:
  {EXIT_OK}  the job completed (some rows may be errors: see the manifests)
  {EXIT_FAILED}  the run failed: a shard failed, another run holds or took the output, a crash
  {EXIT_USAGE}  bad flags, or a job spec that cannot run (nothing was restored)
  {EXIT_NOTHING_RESTORED}  the job completed but every row is an error
  killed by a signal: 128 + its number in a shell (e.g. 137 for kill -9)"""


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
    elif any(os.environ.get(var) for var in _RAY_TOKEN_VARS):
        os.environ.setdefault("RAY_AUTH_MODE", "token")


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


# flag dest -> (JobSpec field, metavar, help). The type, the default and the allowed values come
# from JobSpec, the method registry (restora_core.METHODS), the input readers (tasks.readers)
# and the output writers (tasks.writers), never typed again here.
_SPEC_ARGS: dict[str, tuple[str, str | None, str]] = {
    "input": ("input_uri", "URI", "folder/prefix of images, or of Parquet shards (any fsspec URI)"),
    "output": ("output_uri", "URI",
               "output folder/prefix: images/ or data/, manifests/, plan/, summary.json"),
    "masks": ("masks_uri", "URI", ("prefix of masks with the images' relative paths "
                                  "(pixel 0 = missing, non-zero = known); tasks that take a mask "
                                  "only (`restora tasks`)")),
    "input_format": ("input_format", None, "how to read --input"),
    "output_format": ("output_format", None, ("how to write the restored images (auto: as "
                                             "the input is stored; docs/outputs.md)")),
    "task": ("task", None, ("degradation to undo (`restora tasks` lists each task's --param, "
                           "input size and side input)")),
    "method": ("method", None, "restoration method (`restora methods` lists their parameters)"),
    "steps": ("steps", "N", ("shorthand for --method-param steps=N (default: the method's "
                            "published setting for the task)")),
    "corrections": ("corrections", "C", ("shorthand for --method-param corrections=C "
                                        "(restora_flow's corrections per step)")),
    "seed": ("seed", "N", "run seed; each image's seed derives from it and the image id"),
    "prior": ("prior", "NAME|URI",
              "shipped prior name (digits32, photo32) or a .safetensors/.pt URI"),
    "prior_preset": ("prior_preset", "PRESET", ("architecture of a checkpoint without a model "
                                               "card (celeba128, afhq256, coco128)")),
    "size_policy": ("size_policy", None, ("what to do with images whose size differs from the "
                                         "prior's (tile: restore at their own size in "
                                         "prior-sized tiles, docs/tiling.md)")),
    "inputs": ("inputs", None, ("observed: already degraded; clean: degrade them and score "
                               "(psnr, ssim, psnr_hole, lpips)")),
    "batch_size": ("batch_size", "N", "images per network batch"),
    "shard_size": ("shard_size", "N", "images per shard for image folders (the unit of resume)"),
    "num_actors": ("num_actors", "N", "Ray actors, each holding the prior once"),
    "cpus_per_actor": ("cpus_per_actor", "CPUS", "CPUs each actor reserves"),
    "gpus_per_actor": ("gpus_per_actor", "GPUS",
                       "GPUs each actor reserves (default: 1 if the cluster has GPUs, else 0)"),
    "max_concurrent_shards": ("max_concurrent_shards", "N", "shards in flight at once"),
    "max_pixels": ("max_pixels", "PIXELS", "decompression-bomb cap per image"),
    "max_row_group_bytes": ("max_row_group_bytes", "BYTES",
                            ("Parquet inputs: cap on a row group's declared uncompressed size; "
                            "rows of a larger group are error rows")),
    "lpips_weights": ("lpips_weights", "FILE", ("LPIPS AlexNet .safetensors (make weights); "
                                               "scores lpips with --inputs clean")),
    "precision": ("precision", None,
                  "network precision (auto: bf16 autocast on GPUs, fp32 on CPUs)"),
    "samples": ("samples", "K", "samples per image; K > 1 records their spread per row"),
    "estimate": ("estimate", None, "output for K > 1: per-pixel mean, median, or sample 0"),
    "uncertainty_threshold": ("uncertainty_threshold", "STD",
                              "flag rows whose uncertainty_mean exceeds STD as 'uncertain'"),
}
_SPEC_FLAGS = {dest: field for dest, (field, _, _) in _SPEC_ARGS.items()}
_FIELD_FLAGS = {field: "--" + dest.replace("_", "-") for dest, field in _SPEC_FLAGS.items()}


def _flag_settings(field: str) -> dict[str, Any]:
    """type, choices and the default's help suffix of a JobSpec field's flag, from JobSpec."""
    import typing

    from restora_core import METHODS
    from tasks.readers import reader_names
    from tasks.spec import JobSpec, field_choices
    from tasks.writers import writer_names

    info = JobSpec.model_fields[field]
    kind = info.annotation
    if typing.get_origin(kind) is not None and type(None) in typing.get_args(kind):
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    out: dict[str, Any] = {"type": kind if kind in (int, float) else str}
    if field == "method":
        out["choices"] = list(METHODS)
    elif field == "input_format":
        out["choices"] = ["auto", *reader_names()]
    elif field == "output_format":
        out["choices"] = ["auto", *writer_names()]
    elif typing.get_origin(kind) is typing.Literal:
        out["choices"] = field_choices(field)
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    out["suffix"] = f" (default: {default})" if default not in (None, "") else ""
    return out


def _add_spec_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", metavar="FILE",
                   help="job spec file (JSON or YAML, JobSpec fields); flags override its fields")
    for dest, (field, metavar, text) in _SPEC_ARGS.items():
        settings = _flag_settings(field)
        p.add_argument("--" + dest.replace("_", "-"), dest=dest, metavar=metavar,
                       type=settings["type"], choices=settings.get("choices"),
                       help=text + settings["suffix"])
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="task parameter, value as JSON (repeat): " + _task_param_names())
    p.add_argument("--method-param", action="append", metavar="KEY=VALUE",
                   help="method parameter, e.g. t0=0.1 (repeat; see `restora methods`)")
    p.add_argument("--save-inputs", action="store_true", default=None,
                   help="also write the degraded input and mask beside each output")
    p.add_argument("--save-uncertainty", action="store_true", default=None,
                   help="write each per-pixel std as a 16-bit PNG under uncertainty/ "
                        "(value/65535 = std on the [-1, 1] scale)")
    p.add_argument("--endpoint-url", metavar="URL", help="S3 endpoint (e.g. http://127.0.0.1:9000)")
    p.add_argument("--storage-option", action="append", metavar="KEY=VALUE",
                   help="fsspec storage option, value as JSON (repeat); never credentials: "
                        "those come from the environment (docs/security.md)")
    p.add_argument("--ray-address", metavar="ADDRESS",
                   help="Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--prefect-api-url", metavar="URL",
                   help="Prefect API (default: PREFECT_API_URL, else an ephemeral server)")


def _task_param_names() -> str:
    """``task: name, name; ...`` for the --param help, from the degradation registry."""
    from restora_core.degradations import REGISTRY

    return "; ".join(f"{name}: {', '.join(p.name for p in entry.param_info()) or '-'}"
                     for name, entry in REGISTRY.items()) + " (see `restora tasks`)"


def flagged(message: str) -> str:
    """A JobSpecError message with each JobSpec field named by its command-line flag."""
    import re

    def name(match: re.Match) -> str:
        field, sub = match.group(2), match.group(3)
        if field == "task_params":
            return f"{match.group(1)}--param" + (f" {sub[1:]}" if sub else "")
        return match.group(1) + _FIELD_FLAGS.get(field, field) + (sub or "")

    return re.sub(r"(^|invalid job spec: |; )([a-z_]+)(\.[\w.]+)?(?=:)", name, message)


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
        print(f"restora: error: {flagged(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    from flows import watchdog
    from flows.restore_dataset import restore_dataset

    # The Prefect server and the Ray this run may start die with it, even on kill -9.
    watchdog.start()
    # Progress (images done / total, rate, ETA) arrives as the flow's log lines as batches finish.
    state = restore_dataset(spec=spec, retry_failed=args.retry_failed,
                            overwrite=args.overwrite, ray_address=args.ray_address,
                            wait_lease_s=args.wait_lease, return_state=True)
    if state.is_completed():
        summary = state.result()
        _print_summary(summary)
        return restore_exit_code(summary)
    try:
        state.result()
    except JobSpecError as exc:
        print(f"restora: error: {flagged(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - report, do not dump a second traceback
        print(f"restora: the run failed: {exc}", file=sys.stderr)
    return EXIT_FAILED


def restore_exit_code(summary: dict[str, Any]) -> int:
    """EXIT_OK for a completed run with at least one restored image, else EXIT_NOTHING_RESTORED."""
    images = summary["images"]
    if images["total"] and not images["ok"]:
        print(f"restora: error: none of the {images['total']} images was restored; the "
              f"manifests under {summary['manifests_dir']} give each row's error", file=sys.stderr)
        return EXIT_NOTHING_RESTORED
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the flow as a cron-scheduled deployment (blocks; Ctrl-C or SIGTERM stops it)."""
    from tasks.spec import JobSpecError

    try:
        spec = spec_from_args(args)
    except JobSpecError as exc:
        print(f"restora: error: {flagged(str(exc))}", file=sys.stderr)
        return 2
    from flows.restore_dataset import restore_dataset

    params = {"spec": spec.model_dump(mode="json"), "retry_failed": args.retry_failed,
              "ray_address": args.ray_address}
    restore_dataset.serve(name=args.name, cron=args.cron, parameters=params,
                          description=f"restore {spec.input_uri} -> {spec.output_uri}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Summarise one manifest, or every manifest under an output folder."""
    from tasks.credentials import refuse_credentials
    from tasks.manifest import MANIFEST_COLUMNS, manifest_dir, read_manifest
    from tasks.storage import full_uri, list_files, open_fs
    from tasks.summary import summarize

    target = args.path
    options = _pairs(args.storage_option, "--storage-option")
    try:
        refuse_credentials(options)
    except ValueError as exc:
        print(f"restora: error: --storage-option {exc}", file=sys.stderr)
        return 2
    fs, path = open_fs(target, options)
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


def describe_tasks() -> list[dict[str, Any]]:
    """Every registered task: parameters, side input, input geometry and the methods doing it."""
    from restora_core.degradations import REGISTRY
    from restora_core.samplers import methods_for_task

    return [{"task": entry.name, "summary": entry.summary,
             "parameters": [vars(p) for p in entry.param_info()],
             "side_input": entry.side_input, "input_size": entry.geometry,
             "denoising": entry.denoising, "methods": list(methods_for_task(entry.name))}
            for entry in REGISTRY.values()]


def cmd_tasks(args: argparse.Namespace) -> int:
    """List the tasks with their parameters, side input, input geometry and methods."""
    tasks = describe_tasks()
    if args.json:
        print(json.dumps(tasks, indent=1))
        return 0
    for t in tasks:
        print(f"{t['task']}: {t['summary']}")
        print(f"  input size (--inputs observed; clean ones are the prior's): {t['input_size']}")
        print(f"  side input: {t['side_input'] or 'none'}"
              + (" (--masks)" if t["side_input"] == "mask" else ""))
        print("  parameters (--param NAME=VALUE):" if t["parameters"] else "  parameters: none")
        for p in t["parameters"]:
            allowed = f", {p['range']}" if p["range"] else ""
            print(f"    {p['name']} ({p['type']}, default {p['default']}{allowed}): {p['help']}")
        print(f"  methods: {', '.join(t['methods'])}")
        print()
    return 0


def cmd_train(rest: list[str]) -> int:
    """Hand over to the training flow (flows/train_prior.py), imported only now."""
    from flows.train_prior import main as train_main

    return train_main(rest)


_EXAMPLES = """examples (after `make demo`, from the repository root):
  restora restore --input demo_out/input/images --output out/restored --task box --prior digits32
  restora train --recipe digits32 --max-steps 20 --output out/p.safetensors

`restora COMMAND --help` lists each command's flags; README.md and docs/ have the details."""


def package_version() -> str:
    """The installed restora version (pyproject.toml's, read back when not installed)."""
    from importlib import metadata

    try:
        return metadata.version("restora")
    except metadata.PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        return tomllib.loads(pyproject.read_text())["project"]["version"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `restora`."""
    parser = argparse.ArgumentParser(
        prog="restora", description="Restore image datasets with a flow-matching prior "
        "(Restora-Flow) on Ray, orchestrated by Prefect; train such priors.",
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"restora {package_version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("restore", help="restore a dataset (one run, here)",
                       description="Restore every image of --input into --output (one run).",
                       epilog=_EXIT_CODES_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_spec_arguments(p)
    p.add_argument("--retry-failed", action="store_true",
                   help="redo only rows with status=error in committed shards")
    p.add_argument("--overwrite", action="store_true",
                   help="redo every shard, ignoring committed manifests")
    p.add_argument("--wait-lease", type=float, default=0.0, metavar="SECONDS",
                   help="when another run is writing the same output, wait this long for it "
                        "(default: refuse at once, naming that run)")
    s = sub.add_parser("serve", help="serve the flow with a cron schedule against a Prefect server",
                       description="Register the restore flow as a cron-scheduled deployment "
                                   "and serve it (blocks; Ctrl-C or SIGTERM stops it).")
    _add_spec_arguments(s)
    s.add_argument("--cron", default="0 3 * * *", help="cron schedule (default: 03:00 daily)")
    s.add_argument("--name", default="restora-nightly", help="deployment name (default: %(default)s)")
    s.add_argument("--retry-failed", action="store_true",
                   help="scheduled runs redo only rows with status=error")
    i = sub.add_parser("inspect", help="summarise a manifest or an output folder",
                       description="Summarise one manifest, or every manifest under an output.")
    i.add_argument("path", help="a manifest .parquet or an output folder/prefix")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.add_argument("--errors", type=int, default=10, metavar="N",
                   help="error rows to list (default: %(default)s)")
    i.add_argument("--storage-option", action="append", metavar="KEY=VALUE",
                   help="fsspec storage option, value as JSON (repeat)")
    m = sub.add_parser("methods", help="list the methods, their parameters, defaults, cost, sources",
                       description="List the restoration methods with their parameters, "
                                   "per-task defaults, cost and sources.")
    m.add_argument("--task", choices=_flag_settings("task")["choices"],
                   help="only the methods doing this task, with its defaults")
    m.add_argument("--json", action="store_true", help="print the list as JSON")
    k = sub.add_parser("tasks", help="list the tasks, their parameters, input sizes, methods",
                       description="List the degradations (tasks) with their parameters (type, "
                                   "default, range), side input, input geometry and methods.")
    k.add_argument("--json", action="store_true", help="print the list as JSON")
    sub.add_parser("train", help="train a prior with the train-prior flow (restora train --help)",
                   add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `restora` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] == "train":
        # Prefect reads its API URL at import, so find it before flows.train_prior is imported.
        early = argparse.ArgumentParser(add_help=False)
        early.add_argument("--prefect-api-url")
        known, _ = early.parse_known_args(argv[1:])
        prepare_environment(known.prefect_api_url)
        return cmd_train(argv[1:])
    args = parser.parse_args(argv)
    prepare_environment(getattr(args, "prefect_api_url", None), getattr(args, "ray_address", None))
    if args.command == "restore":
        return cmd_restore(args)
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "methods":
        return cmd_methods(args)
    if args.command == "tasks":
        return cmd_tasks(args)
    return cmd_inspect(args)


# Commands that only read and print: once their output is flushed nothing is left to finish.
_READ_ONLY = ("inspect", "methods", "tasks")


def script() -> None:
    """Console entry of `restora`: ``main``, then a read-only command leaves at once."""
    argv = sys.argv[1:]
    rc = main(argv)
    if argv and argv[0] in _READ_ONLY:
        # pyarrow's native thread pools can abort a finished process at interpreter teardown
        # ("terminate called without an active exception", apache/arrow#34314); a command that
        # has printed everything skips that teardown.
        import logging

        logging.shutdown()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (BrokenPipeError, OSError):
            rc = rc or 1
        os._exit(rc)
    raise SystemExit(rc)


if __name__ == "__main__":
    script()
