"""GPU throughput of the celeba128 architecture under every fast path, inside a hard time budget.

One run measures, side by side on one device: the card's bf16 matrix rate (8192^3 matmul); the
Restora-Flow sampler's cost per network evaluation (NFE) for each runtime setting (fp32, TF32,
bf16 autocast, bf16 weights with float32 GroupNorm, channels-last, a CUDA graph of each whole
sampler transition, torch.compile default and max-autotune) and batch (128/256/512); the PSNR of
the restored (missing) pixels against fp32 on random weights and on the trained photo32 prior;
and the pipeline (the Ray worker class driven in-process) against ``restore()`` in a loop.

Every measurement is written to ``DIR/gpu_<res>.{md,json}`` as soon as it exists; a watchdog
ends the run at ``--budget-s`` and lists what did not fit as "not measured: budget". Compile
rows run in child processes that the watchdog can abandon.

    python -m benchmarks.gpu --out DIR --budget-s 200            # on a GPU machine
    python -m benchmarks.gpu --quick --device cpu --out /tmp/gpu  # smoke test (tiny model)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from restora_core import method_nfe
from restora_core.degradations import box_mask, centered_box
from restora_core.metrics import psnr_hole
from restora_core.models import PRESETS, build_model
from restora_core.noise import generators_for_seeds
from restora_core.runtime import RuntimeConfig, describe, prepare_velocity, resolve_runtime
from restora_core.samplers import restora_flow
from restora_core.storage import write_uri_atomic

GOAL_IMAGES_PER_S = 15.0
GOAL_NFE = 190  # steps=64, corrections=1
PSNR_BAR_DB = 40.0
QUICK_ARCH = {"input_channels": 3, "input_height": 16, "ch": 32, "ch_mult": (1, 2),
              "num_res_blocks": 1, "attn_resolutions": (8,)}


def _cfg(precision: str, cl: bool = False, graph: bool = False, compile_mode: str = "off",
         cudnn: bool = False) -> RuntimeConfig:
    return RuntimeConfig(precision=precision, channels_last=cl, compile=compile_mode,
                         cuda_graph=graph, cudnn_benchmark=cudnn)


# (setting, batches) in the order they are measured: the most informative first, so that what a
# tight budget leaves out is the least needed.
EAGER_PLAN: list[tuple[RuntimeConfig, tuple[int, ...]]] = [  # batch 128 first, then larger
    (_cfg("fp32"), (128,)),
    (_cfg("tf32"), (128,)),
    (_cfg("bf16"), (128,)),
    (_cfg("bf16w"), (128,)),
    (_cfg("bf16", graph=True), (128,)),
    (_cfg("bf16w", graph=True), (128,)),
    (_cfg("bf16", cl=True), (128,)),
    (_cfg("bf16w", cl=True), (128,)),
    (_cfg("bf16w", cl=True, graph=True), (128,)),
    (_cfg("bf16w", cudnn=True), (128,)),
    (_cfg("bf16w", cl=True, cudnn=True), (128,)),
    (_cfg("bf16w", cl=True, cudnn=True, graph=True), (128,)),
    (_cfg("bf16"), (256, 512)),
    (_cfg("bf16w"), (256, 512)),
    (_cfg("bf16w", graph=True), (256, 512)),
    (_cfg("bf16", graph=True), (256, 512)),
]
PSNR_PRECISIONS = ("tf32", "bf16", "bf16w")
COMPILE_MODES = ("default", "max-autotune")
COMPILE_BATCH = 128


def _process_age_s() -> float:
    """Seconds since this process started (Linux /proc; 0 where unknown)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _now() -> float:
    return time.perf_counter()


def matmul_tflops(device: torch.device, n: int = 8192) -> float:
    """Measured bf16 matrix-product rate in TFLOP/s (``n``^3 products)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    start = _now()
    for _ in range(10):
        a @ b
    _sync(device)
    return 2 * n**3 * 10 / (_now() - start) / 1e12


def forward_gflop(net: torch.nn.Module, res: int, channels: int) -> float:
    """GFLOP of one forward pass for one image, counted by torch's flop counter on the CPU."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, channels, res, res)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(x, torch.full((1,), 0.5))
    return counter.get_total_flops() / 1e9


def problem(batch: int, res: int, channels: int, device: torch.device):
    """Fixed observations ``y`` and the paper's centred box ``mask``: image i is the same at any batch."""
    g = torch.Generator().manual_seed(1234)
    base = torch.rand(8, channels, res, res, generator=g) * 2 - 1
    images = base.repeat((batch + 7) // 8, 1, 1, 1)[:batch]
    mask = box_mask(batch, res, res, centered_box(res, res, res * 40 // 128))
    return (images * mask).to(device), mask.to(device)


def run_sampler(v, y, mask, steps: int, graph: bool, device: torch.device):
    """(seconds, output) of one Restora-Flow call (corrections=1, seeds 0..B-1)."""
    gens = generators_for_seeds(range(y.shape[0]), device)
    _sync(device)
    start = _now()
    out = restora_flow(v, y, mask, steps=steps, corrections=1, generator=gens, cuda_graph=graph)
    _sync(device)
    return _now() - start, out


def sampler_row(v, cfg: RuntimeConfig, batch: int, ctx: dict) -> tuple[dict, torch.Tensor]:
    """Time the sampler at two lengths; the per-NFE cost is the slope, the rest fixed overhead."""
    device, (s1, s2) = ctx["device"], ctx["timing_steps"]
    y, mask = problem(batch, ctx["res"], ctx["channels"], device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run_sampler(v, y, mask, 1, cfg.cuda_graph, device)  # warm-up
    t1, _ = run_sampler(v, y, mask, s1, cfg.cuda_graph, device)
    t2, out = run_sampler(v, y, mask, s2, cfg.cuda_graph, device)
    n1, n2 = method_nfe("restora_flow", s1), method_nfe("restora_flow", s2)
    per_nfe = (t2 - t1) / (n2 - n1)
    if per_nfe <= 0:  # timing noise swamped the slope: fall back to the plain mean
        per_nfe = t2 / n2
    overhead = max(0.0, t1 - n1 * per_nfe)
    row = {"setting": _label(cfg, device), "precision": cfg.precision,
           "layout": "channels_last" if cfg.channels_last else "nchw", "compile": cfg.compile,
           "cuda_graph": bool(cfg.cuda_graph), "batch": batch,
           "timed": f"steps {s1} vs {s2} (NFE {n1} vs {n2})",
           "is_gpu_default": describe(cfg) == ctx.get("gpu_default"),
           "ms_per_nfe": round(per_nfe * 1e3, 3), "overhead_ms": round(overhead * 1e3, 1),
           "images_per_s_190nfe": round(batch / (overhead + GOAL_NFE * per_nfe), 3)}
    if ctx.get("gflop"):
        tflops = ctx["gflop"] * batch / per_nfe / 1e3
        row["tflop_s"] = round(tflops, 1)
        if ctx.get("peak_tflops"):
            row["fraction_of_bf16_matmul"] = round(tflops / ctx["peak_tflops"], 3)
    if device.type == "cuda":
        row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return row, out[:8].float().cpu()


def psnr_against(out: torch.Tensor, ref: dict) -> dict:
    """Restored-pixel PSNR (mask == 0 only) of ``out`` against the fp32 reference outputs."""
    n = ref["x"].shape[0]
    vals = psnr_hole(out[:n].float().cpu().clamp(-1, 1), ref["x"], ref["mask"])
    return {"psnr_restored_mean_db": round(float(vals.mean()), 2),
            "psnr_restored_min_db": round(float(vals.min()), 2),
            "max_abs_diff": float((out[:n].float().cpu() - ref["raw"]).abs().max()),
            "within_40db": bool(float(vals.min()) >= PSNR_BAR_DB)}


def reference(net, batch: int, ctx: dict) -> dict:
    """fp32 eager outputs of the PSNR set (``psnr_steps`` steps, seeds 0..batch-1), on the CPU."""
    device = ctx["device"]
    y, mask = problem(batch, ctx["res_of"](net), ctx["channels_of"](net), device)
    v = prepare_velocity(net, device, _cfg("fp32"))
    _, out = run_sampler(v, y, mask, ctx["psnr_steps"], False, device)
    return {"x": out.float().cpu().clamp(-1, 1), "raw": out.float().cpu(),
            "mask": mask.float().cpu(), "y": y, "mask_dev": mask}


class Bench:
    """Results so far, the budget, the watchdog, and the tables written after every change."""

    def __init__(self, args: argparse.Namespace, stem: str):
        self.args, self.start = args, _now()
        # The budget counts from process start (imports included); keep 5 s to write and exit.
        self.deadline = self.start - _process_age_s() + args.budget_s - 5.0
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.stem = stem
        self.lock = threading.RLock()
        self.children: list[subprocess.Popen] = []
        self.result: dict[str, Any] = {"info": {}, "rows": [], "psnr": [], "pipeline": [],
                                       "not_measured": [], "notes": []}
        self.pending: list[str] = []
        self.tmp: Path | None = None  # scratch folder, removed at the end or by the watchdog

    def left(self) -> float:
        """Seconds left before the watchdog stops the run."""
        return self.deadline - _now()

    def add(self, section: str, row: dict) -> None:
        """Record one measurement and rewrite the tables."""
        with self.lock:
            self.result[section].append(row)
            self.write()

    def skip(self, what: str, reason: str) -> None:
        """Record a row that was not measured and why."""
        with self.lock:
            self.result["not_measured"].append({"row": what, "reason": f"not measured: {reason}"})
            if what in self.pending:
                self.pending.remove(what)
            self.write()

    def done(self, what: str) -> None:
        """Strike ``what`` off the plan."""
        with self.lock:
            if what in self.pending:
                self.pending.remove(what)

    def write(self) -> None:
        """Write ``<stem>.json`` and ``<stem>.md`` atomically."""
        with self.lock:
            self.result["info"]["seconds"] = round(_now() - self.start, 1)
            for name, text in ((f"{self.stem}.json", json.dumps(self.result, indent=1, default=str)),
                               (f"{self.stem}.md", to_markdown(self.result))):
                write_uri_atomic(str(self.out / name), text.encode())

    def watchdog(self) -> None:
        """At the deadline: list what is left as not measured, stop the children, exit."""
        while self.left() > 0:
            time.sleep(min(0.5, max(0.01, self.left())))
        with self.lock:
            for what in list(self.pending):
                self.skip(what, f"budget ({self.args.budget_s:g} s) ran out")
            self.result["notes"].append(f"stopped by the budget watchdog after "
                                        f"{_now() - self.start:.0f} s")
            self.stop_children()
            self.write()
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
        os._exit(0)

    def stop_children(self) -> None:
        """Kill the compile child processes this run started, with their compile workers."""
        for child in self.children:
            kill_child(child)


def _estimate_s(cfg: RuntimeConfig, batch: int, ctx: dict) -> float:
    """Seconds a sampler row should take, from the rows measured so far (pessimistic)."""
    s1, s2 = ctx["timing_steps"]
    nfe = 1 + method_nfe("restora_flow", s1) + method_nfe("restora_flow", s2)
    same = [r for r in ctx["bench"].result["rows"] if r["precision"] == cfg.precision]
    known = same or ctx["bench"].result["rows"]
    if not known:
        return 0.0
    per_image = max(r["ms_per_nfe"] / r["batch"] for r in known) / 1e3
    return 1.3 * nfe * per_image * batch + 2.0


def eager_rows(net, ctx: dict, plan: list[tuple[RuntimeConfig, tuple[int, ...]]]) -> None:
    """The eager and CUDA-graph sampler rows of ``plan``."""
    bench, device = ctx["bench"], ctx["device"]
    firsts = ctx["firsts"]  # first outputs per setting, for the graph-vs-eager check
    for plan_cfg, batches in plan:
        # The plan's cuda_graph flag is kept on every device: on a CPU the same static-buffer
        # transitions run without capture, and the row says so.
        cfg = replace(resolve_runtime(plan_cfg, device), cuda_graph=plan_cfg.cuda_graph)
        v = None
        for batch in ctx["batches"](batches):
            what = f"sampler {_label(cfg, device)} batch {batch}"
            if _estimate_s(cfg, batch, ctx) > bench.left():
                bench.skip(what, "budget")
                continue
            if v is None:
                v = prepare_velocity(net, device, cfg)
            try:
                row, first = sampler_row(v, cfg, batch, ctx)
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                bench.skip(what, "out of device memory")
                continue
            except Exception as exc:  # noqa: BLE001 - a fast path that fails is a result
                bench.skip(what, f"failed: {type(exc).__name__}: {str(exc)[:300]}")
                continue
            key = (cfg.precision, cfg.channels_last, cfg.cudnn_benchmark, batch)
            twin = (*key, not cfg.cuda_graph)
            if twin in firsts:  # same setting with/without graph: the graph must not change pixels
                row["max_abs_vs_" + ("eager" if cfg.cuda_graph else "graph")] = \
                    float((first - firsts[twin]).abs().max())
            firsts[(*key, bool(cfg.cuda_graph))] = first
            bench.add("rows", row)
            bench.done(what)
        del v
        if device.type == "cuda":
            torch.cuda.empty_cache()


def psnr_rows(name: str, net, batch: int, ctx: dict) -> None:
    """Restored-pixel PSNR against fp32 of each precision (CUDA graph on, NCHW) for ``net``."""
    bench, device = ctx["bench"], ctx["device"]
    what0 = f"psnr {name} reference fp32"
    if bench.left() < 10:
        for p in PSNR_PRECISIONS:
            bench.skip(f"psnr {name} {p}", "budget")
        return
    started = _now()
    ref = reference(net, batch, ctx)
    ref_s = _now() - started
    bench.done(what0)
    ctx["refs"][name] = ref
    for precision in PSNR_PRECISIONS:
        what = f"psnr {name} {precision}"
        if ref_s > bench.left():
            bench.skip(what, "budget")
            continue
        cfg = resolve_runtime(_cfg(precision, graph=device.type == "cuda"), device)
        v = prepare_velocity(net, device, cfg)
        try:
            _, out = run_sampler(v, ref["y"], ref["mask_dev"], ctx["psnr_steps"], cfg.cuda_graph,
                                 device)
        except Exception as exc:  # noqa: BLE001 - graphs failed: the eager walk gives the pixels
            bench.result["notes"].append(f"psnr {name} {precision}: CUDA graph failed "
                                         f"({type(exc).__name__}: {str(exc)[:200]}); ran eagerly")
            cfg = replace(cfg, cuda_graph=False)
            _, out = run_sampler(v, ref["y"], ref["mask_dev"], ctx["psnr_steps"], False, device)
        bench.add("psnr", {"model": name, "setting": describe(cfg), "batch": batch,
                           "nfe": method_nfe("restora_flow", ctx["psnr_steps"]),
                           **psnr_against(out, ref)})
        bench.done(what)


def pipeline_rows(ctx: dict, tmp: Path) -> None:
    """The Ray worker class driven in-process over a folder of images vs ``restore()`` in a loop."""
    from benchmarks.gpu_pipeline import measure_pipeline

    bench = ctx["bench"]
    what = "pipeline"
    try:
        row = measure_pipeline(ctx["net"], ctx["arch"], tmp, device=ctx["device"],
                               images=ctx["pipeline_images"],
                               batch=ctx["pipeline_batch"], steps=ctx["pipeline_steps"],
                               deadline_s=bench.left())
    except ImportError as exc:
        bench.skip(what, f"needs {exc.name} on this machine")
        return
    except TimeoutError as exc:
        bench.skip(what, f"budget ({exc})")
        return
    except Exception as exc:  # noqa: BLE001 - recorded, and the other rows still run
        bench.skip(what, f"failed: {type(exc).__name__}: {str(exc)[:300]}")
        return
    bench.add("pipeline", row)
    bench.done(what)


def kill_child(child: subprocess.Popen) -> None:
    """Kill a compile child's process group (it was started in a session of its own)."""
    if child.poll() is None:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.wait()


def start_compile_child(mode: str, ctx: dict, tmp: Path) -> subprocess.Popen:
    """Start the child that compiles ``mode`` now and measures when ``tmp/go`` appears."""
    args = ctx["bench"].args
    cmd = [sys.executable, "-m", "benchmarks.gpu", "--child-compile", mode, "--child-dir", str(tmp),
           "--device", str(ctx["device"]), "--out", str(tmp / f"child-{mode}")]
    if args.quick:
        cmd.append("--quick")
    env = {**os.environ, "TORCHINDUCTOR_COMPILE_THREADS": str(max(1, (os.cpu_count() or 2) // 2))}
    log = open(tmp / f"child-{mode}.log", "w")  # noqa: SIM115 - closed when the child ends
    # Its own process group, so that stopping it also stops inductor's compile workers.
    child = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    ctx["bench"].children.append(child)
    return child


def collect_compile_child(mode: str, child: subprocess.Popen, ctx: dict, tmp: Path) -> None:
    """Let the child measure, wait for it within the budget, and record its rows."""
    bench = ctx["bench"]
    (tmp / f"go-{mode}").touch()
    try:
        child.wait(timeout=max(1.0, bench.left()))
    except subprocess.TimeoutExpired:
        kill_child(child)
    rows_file = tmp / f"rows-{mode}.json"
    rows = json.loads(rows_file.read_text()) if rows_file.exists() else []
    compiled = tmp / f"compiled-{mode}.json"
    compile_s = json.loads(compiled.read_text())["compile_s"] if compiled.exists() else None
    for row in rows:
        if "error" in row:
            bench.add("not_measured", {"row": row["error"].split(":")[0],
                                       "reason": "not measured: failed: " + row["error"]})
            continue
        row["compile_s"] = compile_s
        bench.add("psnr" if "psnr_restored_mean_db" in row else "rows", row)
    what = f"compile {mode}"
    if not rows:
        tail = (tmp / f"child-{mode}.log").read_text()[-300:].strip().replace("\n", " | ")
        state = (f"compiled in {compile_s:.0f} s but not timed" if compile_s is not None
                 else f"compile not finished after {_now() - ctx['child_started'][mode]:.0f} s")
        bench.skip(what, f"budget ({state}); log tail: {tail}" if child.returncode in (None, -9)
                   else f"child failed ({state}); log tail: {tail}")
    else:
        bench.done(what)


def child_main(args: argparse.Namespace) -> int:
    """Compile-child entry: compile, wait for go, time the compiled rows and their PSNR."""
    tmp, mode = Path(args.child_dir), args.child_compile
    device = torch.device(args.device)
    net = _model(args.quick)
    res, ch = net.input_height, net.input_channels
    ctx = {"device": device, "res": res, "channels": ch, "timing_steps": _timing_steps(args.quick),
           "gflop": None, "peak_tflops": None}
    info = json.loads((tmp / "ctx.json").read_text())
    ctx["gflop"], ctx["peak_tflops"] = info["gflop"], info["peak_tflops"]
    batch = 4 if args.quick else COMPILE_BATCH
    cfg = resolve_runtime(_cfg("bf16w", compile_mode=mode), device)
    started = _now()
    v = prepare_velocity(net, device, cfg)
    y, mask = problem(batch, res, ch, device)
    with torch.inference_mode():
        v(y, torch.full((batch,), 0.5, device=device))
    _sync(device)
    (tmp / f"compiled-{mode}.json").write_text(json.dumps({"compile_s": round(_now() - started, 1)}))
    while not (tmp / f"go-{mode}").exists():
        time.sleep(0.2)
    rows: list[dict] = []

    def save() -> None:
        write_uri_atomic(str(tmp / f"rows-{mode}.json"), json.dumps(rows).encode())

    for graph in (False, True):
        gcfg = resolve_runtime(_cfg("bf16w", graph=graph, compile_mode=mode), device)
        try:
            row, _ = sampler_row(v, gcfg, batch, ctx)
        except Exception as exc:  # noqa: BLE001 - a failed fast path is a result, not a crash
            row = {"error": f"sampler {_label(gcfg, device)} batch {batch}: "
                            f"{type(exc).__name__}: {str(exc)[:300]}"}
        rows.append(row)
        save()
    ref = torch.load(tmp / "ref.pt")
    y, mask = problem(batch, res, ch, device)
    _, out = run_sampler(v, y, mask, int(info["psnr_steps"]), False, device)
    rows.append({"model": "random", "setting": describe(cfg), "batch": batch,
                 "nfe": method_nfe("restora_flow", int(info["psnr_steps"])),
                 **psnr_against(out, ref)})
    save()
    return 0


def _label(cfg: RuntimeConfig, device: torch.device) -> str:
    """``describe(cfg)``, saying when the graph flag ran uncaptured (not on CUDA)."""
    label = describe(cfg)
    return label if device.type == "cuda" else label.replace("cuda_graph", "static_uncaptured")


def _timing_steps(quick: bool) -> tuple[int, int]:
    return (1, 2) if quick else (2, 7)


def _model(quick: bool) -> torch.nn.Module:
    torch.manual_seed(0)  # the same random weights in the parent and in the compile children
    return build_model(dict(QUICK_ARCH) if quick else "celeba128").eval()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _psnr_of(row: dict, psnr: list[dict], compiled: bool) -> list[dict]:
    """PSNR rows of ``row``'s precision: uncompiled, or compiled in ``row``'s mode."""
    return [p for p in psnr if p["setting"].split("+")[0] == row["precision"]
            and (f"compile:{row['compile']}" in p["setting"] if compiled
                 else "compile:" not in p["setting"])]


def psnr_cell(row: dict, psnr: list[dict]) -> str:
    """Min restored-pixel PSNR vs fp32 for ``row``'s arithmetic, per model (e.g. ``random 52.1``)."""
    if row["precision"] == "fp32" and row["compile"] == "off":
        return "reference"
    same = _psnr_of(row, psnr, False) + (_psnr_of(row, psnr, True) if row["compile"] != "off" else [])
    return ", ".join(f"{p['model']}{' compiled' if 'compile:' in p['setting'] else ''} "
                     f"{p['psnr_restored_min_db']}" for p in same) or "not measured"


def numerics_ok(row: dict, psnr: list[dict]) -> bool:
    """Whether ``row``'s setting kept restored pixels within 40 dB of fp32 on both models.

    Layout and CUDA graphs do not change the arithmetic (the graph rows report their difference
    to eager); precision must be checked on random weights and on the trained photo32 prior, and
    a compiled row also needs its own check (random weights).
    """
    if row["precision"] == "fp32" and row["compile"] == "off":
        return True
    base = _psnr_of(row, psnr, False)
    ok = {"random", "photo32"} <= {p["model"] for p in base} and all(p["within_40db"] for p in base)
    if row["compile"] != "off":
        compiled = _psnr_of(row, psnr, True)
        ok = ok and bool(compiled) and all(p["within_40db"] for p in compiled)
    return ok


def goal_line(result: dict) -> str:
    """Whether the 15 images/s goal is met by a setting that keeps fp32's pictures (>= 40 dB)."""
    rows = [r for r in result["rows"] if numerics_ok(r, result["psnr"])]
    if not rows:
        return "Goal (15 images/s at 128x128, 190 NFE): not measured."
    best = max(rows, key=lambda r: r["images_per_s_190nfe"])
    verdict = "MET" if best["images_per_s_190nfe"] >= GOAL_IMAGES_PER_S else "MISSED"
    why = (f"fastest setting whose restored pixels stay within {PSNR_BAR_DB:g} dB of fp32: "
           f"**{best['setting']}** at batch {best['batch']}, {best['images_per_s_190nfe']} "
           f"images/s ({best['ms_per_nfe']} ms/NFE")
    if "fraction_of_bf16_matmul" in best:
        why += f", {best['fraction_of_bf16_matmul']:.1%} of the measured bf16 matmul rate"
    return (f"Goal (15 images/s at 128x128, 190 NFE): **{verdict}** - {why}). "
            f"Recommended GPU default (restora_core.runtime.DEVICE_DEFAULTS['cuda']): "
            f"{best['setting']}; shipped now: {result['info'].get('gpu_default')}.")


def _table(rows: list[dict]) -> list[str]:
    if not rows:
        return ["(none)"]
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return lines


def to_markdown(result: dict) -> str:
    """The result as a markdown report."""
    info = result["info"]
    lines = [f"# GPU benchmark ({info.get('date')}, {info.get('device')})", "",
             f"Command: `{info.get('command')}`", "",
             "```", json.dumps(info, indent=1), "```", "", goal_line(result), "",
             f"## Sampler rows ({info.get('model')})", "",
             ("ms_per_nfe is the slope between two sampler lengths (so it is the cost per network "
             "evaluation inside the real sampler: mask re-imposition, noise, step and network); "
             "overhead_ms is the fixed cost per call (setup, graph capture); images_per_s_190nfe "
             "= batch / (overhead + 190 x ms_per_nfe). Setting names: precision + layout "
             "[+ compile:mode] [+ cuda_graph]."), ""]
    lines += _table([{**r, "restored_psnr_min_db_vs_fp32": psnr_cell(r, result["psnr"]),
                      "within_40db": numerics_ok(r, result["psnr"])} for r in result["rows"]])
    lines += ["", "## Restored-pixel PSNR against fp32 (same seeds; mask == 0 pixels only)", ""]
    lines += _table(result["psnr"])
    lines += ["", "## Pipeline: worker class in-process vs restore() in a loop", ""]
    lines += _table(result["pipeline"])
    lines += ["", "## Not measured", ""]
    lines += _table(result["not_measured"])
    if result["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict:
    """Every measurement in order of value, inside ``args.budget_s``; returns the result."""
    device = torch.device(args.device)
    if args.quick and device.type == "cpu":
        torch.set_num_threads(1)  # a smoke test on a shared CPU: an OpenMP team only thrashes
    stem = "gpu_quick" if args.quick else "gpu_128"
    bench = Bench(args, stem)
    info = bench.result["info"]
    info.update({"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                 "device": _device_name(device), "torch": torch.__version__,
                 "python": platform.python_version(), "command": args.command,
                 "budget_s": args.budget_s,
                 "gpu_default": describe(resolve_runtime(RuntimeConfig(), "cuda")),
                 "cpu_default": describe(resolve_runtime(RuntimeConfig(), "cpu"))})
    net = _model(args.quick)
    res, ch = net.input_height, net.input_channels
    info["model"] = "quick tiny UNet" if args.quick else "celeba128 (random weights)"
    info["resolution"] = res
    info["gflop_per_image_forward"] = round(forward_gflop(net, res, ch), 2)
    bench.pending = ([f"sampler {_label(replace(resolve_runtime(c, device), cuda_graph=c.cuda_graph), device)} batch {b}"
                      for c, bs in EAGER_PLAN for b in (bs if not args.quick else (1, 2)[:len(bs)])]
                     + ["pipeline"] + [f"compile {m}" for m in COMPILE_MODES]
                     + [f"psnr {n} {p}" for n in ("random", "photo32") for p in PSNR_PRECISIONS])
    threading.Thread(target=bench.watchdog, daemon=True).start()
    bench.write()
    tmp = bench.tmp = Path(tempfile.mkdtemp(prefix="gpubench-"))
    ctx: dict[str, Any] = {
        "gpu_default": info["gpu_default"], "bench": bench, "device": device, "res": res, "channels": ch, "net": net,
        "arch": dict(QUICK_ARCH) if args.quick else dict(PRESETS["celeba128"]),
        "timing_steps": _timing_steps(args.quick), "psnr_steps": 2 if args.quick else 64,
        "gflop": info["gflop_per_image_forward"], "peak_tflops": None, "refs": {},
        "batches": (lambda bs: (1, 2)[:len(bs)]) if args.quick else (lambda bs: bs),
        "res_of": lambda m: m.input_height, "channels_of": lambda m: m.input_channels,
        "pipeline_images": 8 if args.quick else 1024, "pipeline_batch": 4 if args.quick else 128,
        "pipeline_steps": 2 if args.quick else 4, "child_started": {}, "firsts": {}}
    try:
        if device.type == "cuda":
            info["bf16_matmul_tflops"] = ctx["peak_tflops"] = round(matmul_tflops(device), 1)
        (tmp / "ctx.json").write_text(json.dumps({"gflop": ctx["gflop"], "psnr_steps": ctx["psnr_steps"],
                                                  "peak_tflops": ctx["peak_tflops"]}))
        children = {}
        if args.skip_compile or (args.quick and device.type == "cpu" and not args.compile_in_quick):
            why = ("--skip-compile" if args.skip_compile else "--quick on cpu (inductor's C++ "
                   "compile takes minutes on a small CPU; --compile-in-quick forces it)")
            for m in COMPILE_MODES:
                bench.skip(f"compile {m}", why)
        else:
            # Compiling is CPU work: the default mode compiles while the eager rows run.
            ctx["child_started"]["default"] = _now()
            children["default"] = start_compile_child("default", ctx, tmp)
        psnr_rows("random", net, 2 if args.quick else 8, ctx)
        if "random" in ctx["refs"]:  # the compile children compare against it
            torch.save({k: v for k, v in ctx["refs"]["random"].items() if k in ("x", "raw", "mask")},
                       tmp / "ref.pt")
        first_batch = [(c, bs) for c, bs in EAGER_PLAN if 128 in bs]
        eager_rows(net, ctx, first_batch)
        from restora_core import load_prior

        photo = load_prior("photo32").velocity
        psnr_rows("photo32", photo, 2 if args.quick else 16, ctx)
        pipeline_rows(ctx, tmp)
        if "default" in children and (tmp / "compiled-default.json").exists():
            collect_compile_child("default", children.pop("default"), ctx, tmp)
        eager_rows(net, ctx, [p for p in EAGER_PLAN if p not in first_batch])
        if "default" in children:  # still compiling after the batch-128 rows: measure it last
            collect_compile_child("default", children.pop("default"), ctx, tmp)
        if "compile max-autotune" in bench.pending and bench.left() > 10:
            # max-autotune benchmarks kernels on the device: it runs last, alone, and is
            # abandoned when the budget ends.
            ctx["child_started"]["max-autotune"] = _now()
            child = start_compile_child("max-autotune", ctx, tmp)
            collect_compile_child("max-autotune", child, ctx, tmp)
    finally:
        bench.stop_children()
        for what in list(bench.pending):
            bench.skip(what, "budget")
        bench.write()
        shutil.rmtree(tmp, ignore_errors=True)
    return bench.result


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny model, tiny batches (CPU smoke test)")
    p.add_argument("--budget-s", type=float, default=200.0, help="hard wall-clock limit")
    p.add_argument("--skip-compile", action="store_true", help="leave out torch.compile rows")
    p.add_argument("--compile-in-quick", action="store_true",
                   help="run the compile children in --quick on a CPU too (slow)")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--child-compile", choices=COMPILE_MODES, help=argparse.SUPPRESS)
    p.add_argument("--child-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_compile:
        return child_main(args)
    args.command = "python -m benchmarks.gpu " + " ".join(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the cleanup in ``finally``
    result = run(args)
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
