"""GPU throughput of the celeba128 architecture and of the Restora-Flow sampler.

Measures, on one CUDA device: the card's bf16 matrix rate; forward time per network evaluation
at several batch sizes in fp32, TF32, bf16 autocast, bf16 + channels-last, and (time permitting)
torch.compile and CUDA graphs; the full sampler (190 evaluations) at the fastest setting and in
fp32, its efficiency against the bare network, and the PSNR between bf16 and fp32 outputs on the
same seeds. ``--quick`` runs a tiny version that also works on CPU.

    python -m benchmarks.gpu --out benchmarks/results            # on a GPU machine
    python -m benchmarks.gpu --quick --device cpu --out /tmp/gpu  # smoke test
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
from pathlib import Path

import torch

from restora_core import load_prior
from restora_core.degradations import box_mask, centered_box
from restora_core.metrics import psnr
from restora_core.models import build_model
from restora_core.noise import generators_for_seeds
from restora_core.runtime import RuntimeConfig, prepare_velocity
from restora_core.samplers import restora_flow

GFLOP_PER_FORWARD = {128: 49.8, 256: 189.4}
PUBLISHED_MS_PER_NFE = 20.0

MODES = {
    "fp32": RuntimeConfig("fp32", channels_last=False),
    "tf32": RuntimeConfig("tf32", channels_last=False),
    "bf16": RuntimeConfig("bf16", channels_last=False),
    "bf16+channels_last": RuntimeConfig("bf16", channels_last=True),
    "bf16+channels_last+compile": RuntimeConfig("bf16", channels_last=True, compile=True),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, iters: int, warmup: int) -> float:
    """Mean seconds per call of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / iters


def matmul_tflops(device: torch.device, n: int = 8192) -> float:
    """Measured bf16 matrix-product rate in TFLOP/s."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    sec = timed(lambda: a @ b, device, iters=10, warmup=3)
    return 2 * n**3 / sec / 1e12


def cuda_graph_forward(net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor):
    """A replay function for ``net(x, t)`` captured once as a CUDA graph (static shapes)."""
    sx, st = x.clone(), t.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            net(sx, st)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = net(sx, st)
    return graph.replay, out


def run(args: argparse.Namespace) -> dict:
    """Run every measurement; returns the rows and the machine description."""
    device = torch.device(args.device)
    started = time.perf_counter()
    res = args.resolution
    net = build_model("celeba128" if res == 128 else "afhq256")
    if args.quick:
        net = build_model({"input_channels": 3, "input_height": res, "ch": 32, "ch_mult": (1, 2),
                           "num_res_blocks": 1, "attn_resolutions": (8,)})
    torch.manual_seed(0)
    info = {"date": dt.date.today().isoformat(), "device": _device_name(device),
            "torch": torch.__version__, "python": platform.python_version(),
            "command": args.command}
    if device.type == "cuda":
        info["bf16_matmul_tflops"] = round(matmul_tflops(device), 1)
    rows = []
    batches = [1, 4] if args.quick else [1, 8, 32, 64, 128]
    gflop = GFLOP_PER_FORWARD.get(res, float("nan"))
    for mode, cfg in MODES.items():
        if cfg.compile and (args.quick or args.skip_compile or device.type != "cuda"):
            continue
        v = prepare_velocity(net, device, cfg)
        for b in batches:
            if cfg.compile and b not in (1, 64):
                continue
            if time.perf_counter() - started > args.budget_s:
                break
            x = torch.randn(b, 3, res, res, device=device)
            t = torch.full((b,), 0.5, device=device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            with torch.inference_mode():
                sec = timed(lambda v=v, x=x, t=t: v(x, t), device, iters=args.iters,
                            warmup=3 if cfg.compile else 2)
            rows.append(_row("forward", mode, b, sec, gflop, info, device))
    if device.type == "cuda" and time.perf_counter() - started < args.budget_s:
        v = prepare_velocity(net, device, MODES["bf16+channels_last"])
        for b in (1, 64):
            x = torch.randn(b, 3, res, res, device=device)
            t = torch.full((b,), 0.5, device=device)
            with torch.inference_mode():
                replay, _ = cuda_graph_forward(v, x, t)
                sec = timed(replay, device, iters=args.iters, warmup=2)
            rows.append(_row("forward", "bf16+channels_last+cuda_graph", b, sec, gflop, info, device))

    # The whole sampler: efficiency against the bare network, speed, and fp32 vs bf16 pictures.
    b = 4 if args.quick else args.sampler_batch
    steps = 8 if args.quick else 64
    mask = box_mask(b, res, res, centered_box(res, res, res * 40 // 128)).to(device)
    y = (torch.rand(b, 3, res, res, device=device) * 2 - 1) * mask
    outs = {}
    for mode in ("fp32", "bf16+channels_last"):
        v = prepare_velocity(net, device, MODES[mode])
        nfe = steps + 2 * (steps - 1)
        def run_once(v=v):
            return restora_flow(v, y, mask, steps=steps, corrections=1,
                                generator=generators_for_seeds(range(b), device))

        outs[mode] = run_once()
        sec = timed(run_once, device, iters=1, warmup=0)
        x = torch.randn(b, 3, res, res, device=device)
        t = torch.full((b,), 0.5, device=device)
        with torch.inference_mode():
            fwd = timed(lambda v=v, x=x, t=t: v(x, t), device, iters=args.iters, warmup=2)
        row = _row("sampler", mode, b, sec, gflop, info, device, nfe=nfe)
        row["efficiency"] = round(nfe * fwd / sec, 3)
        rows.append(row)
    info["psnr_bf16_vs_fp32_random_weights_db"] = round(
        float(psnr(outs["bf16+channels_last"], outs["fp32"]).mean()), 2)
    if args.trained_prior:
        info["psnr_bf16_vs_fp32_trained_prior_db"] = _trained_psnr(args.trained_prior, device)
    info["seconds"] = round(time.perf_counter() - started, 1)
    return {"info": info, "rows": rows}


def _trained_psnr(uri: str, device: torch.device) -> float:
    prior = load_prior(uri)
    r = prior.resolution
    b = 16
    mask = box_mask(b, r, r, centered_box(r, r, r // 4)).to(device)
    y = (torch.rand(b, prior.channels, r, r, device=device) * 2 - 1) * mask
    outs = []
    for mode in ("fp32", "bf16+channels_last"):
        v = prepare_velocity(prior.velocity, device, MODES[mode])
        outs.append(restora_flow(v, y, mask, steps=64, corrections=1,
                                 generator=generators_for_seeds(range(b), device)))
    return round(float(psnr(outs[1], outs[0]).mean()), 2)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _row(kind, mode, batch, sec, gflop, info, device, nfe=1) -> dict:
    per_nfe = sec / nfe
    row = {"kind": kind, "mode": mode, "batch": batch, "seconds": round(sec, 5),
           "ms_per_nfe": round(per_nfe * 1e3, 3), "nfe_per_s": round(1 / per_nfe, 2),
           "images_per_s_190nfe": round(batch / (per_nfe * 190), 3),
           "tflops": round(gflop * batch / per_nfe / 1e3, 2)}
    if "bf16_matmul_tflops" in info:
        row["fraction_of_bf16_peak"] = round(row["tflops"] / info["bf16_matmul_tflops"], 3)
    if device.type == "cuda":
        row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return row


def to_markdown(result: dict) -> str:
    """The result as a markdown report."""
    info, rows = result["info"], result["rows"]
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = [f"# GPU benchmark ({info['date']}, {info['device']})", "",
             f"Command: `{info['command']}`", "",
             "```", json.dumps(info, indent=1), "```", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--sampler-batch", type=int, default=64)
    p.add_argument("--budget-s", type=float, default=420.0)
    p.add_argument("--trained-prior", default="")
    p.add_argument("--skip-compile", action="store_true", help="leave out torch.compile rows")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    args.command = "python -m benchmarks.gpu " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("command",))
    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "gpu_quick" if args.quick else f"gpu_{args.resolution}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (out / f"{stem}.md").write_text(to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
