"""Every inference backend and precision against eager fp32 (how the authors' code runs), in one run, one table.

    python benchmarks/bench_inference.py [--device cpu|cuda] [--iters 10] [--backends eager:fp32,openvino:bf16]
                                         [--json results.json] [--markdown table.md]

Full-size model (CLIP ViT-B/16 tower + the released decoder) with RANDOM weights: timing does not depend on weight
values. A synthetic 1242x375 street frame goes in; depth at the input size comes out (preprocessing, model, output
resize and the copy back to numpy all counted, as a user of DepthEstimator sees it). Columns:

  b1 p50/p90   ms per frame at batch 1 (DepthEstimator.predict on one frame)
  fwd p50      ms of the model alone at batch 1 (backend.forward on ready pixel values)
  b8 img/s     frames per second when 8 frames go as one batch
  peak MB      CUDA: torch.cuda.max_memory_allocated while the row ran; CPU: growth of the process RSS over the row
  max/mean rel depth error against eager fp32 on the same frame (max |a-b| / max |b|; mean |a-b| / |b|)
  x eager      eager fp32's b1 p50 divided by the row's, in the same run
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
import check_io  # noqa: E402

CPU_ROWS = ["eager:fp32", "eager:bf16", "compile:fp32", "onnxruntime:fp32", "openvino:fp32", "openvino:bf16"]
CUDA_ROWS = ["eager:fp32", "eager:fp16", "eager:bf16", "compile:fp16", "cudagraph:fp32", "cudagraph:fp16",
             "cudagraph:bf16", "cudagraph-nocompile:fp16"]


def full_size_model():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from space_clip_ros.model import SpaceClip, SpaceClipConfig

    torch.manual_seed(0)
    model = SpaceClip(SpaceClipConfig(), CLIPVisionModel(CLIPVisionConfig(patch_size=16, image_size=224)))
    torch.nn.init.constant_(model.decoder.depth_prediction_head[3].bias, 10.0)  # positive depth through the ReLU
    model.provenance = {"trained": True, "source": "benchmark: random weights, timing only"}
    return model.eval()


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        driver = ""
        try:
            import subprocess

            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
        return (f"{props.name}, driver {driver or '?'}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
                f"{os.cpu_count()} CPU cores")
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"


def row_backend(spec: str):
    """``backend:precision`` -> (backend, its options, precision); ``cudagraph`` rows compile before the first frame
    (the compiled numbers), ``cudagraph-nocompile`` rows never compile (what serves while the node compiles)."""
    from space_clip_ros.device import INFERENCE_PRECISIONS
    from space_clip_ros.inference import BACKENDS

    backend, _, precision = spec.partition(":")
    options = {}
    if backend == "cudagraph-nocompile":
        backend, options = "cudagraph", {"compile": False}
    elif backend == "cudagraph":
        options = {"compile": True}
    if backend not in BACKENDS or precision not in INFERENCE_PRECISIONS:
        raise SystemExit(f"bench_inference: bad row {spec!r}: backend one of {BACKENDS} or cudagraph-nocompile, "
                         f"precision one of {INFERENCE_PRECISIONS}")
    return backend, options, precision


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, iters: int, device: torch.device) -> List[float]:
    out = []
    for _ in range(iters):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        out.append((time.perf_counter() - start) * 1000)
    return out


def percentile(values: List[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run_row(spec: str, model, device: torch.device, frame: np.ndarray, iters: int, warmup: int,
            reference: Optional[np.ndarray]) -> Dict:
    from space_clip_ros import DepthEstimator
    from space_clip_ros.export import depth_errors

    backend, options, precision = row_backend(spec)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = rss_mb()
    start = time.perf_counter()
    # A fresh fp32 copy per row: backends move and cast the model they are given.
    estimator = DepthEstimator(copy.deepcopy(model), device=str(device), precision=precision, backend=backend,
                               **options)
    estimator.warmup()
    first = estimator(frame)
    setup_s = time.perf_counter() - start
    for _ in range(warmup):
        estimator(frame)
    b1 = timed(lambda: estimator(frame), iters, device)
    pixels = estimator.preprocess([frame])
    with torch.inference_mode():
        for _ in range(warmup):
            estimator.backend.forward(pixels)
        fwd = timed(lambda: estimator.backend.forward(pixels), iters, device)
    batch = [frame] * 8
    for _ in range(max(1, warmup // 2)):
        estimator(batch)
    b8 = timed(lambda: estimator(batch), max(2, iters // 3), device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = rss_mb() - rss_before
    errors = depth_errors(first, reference) if reference is not None else {"max_rel": 0.0, "mean_rel": 0.0}
    row = {
        "backend": spec, "described": estimator.backend.describe(), "setup_s": setup_s,
        "b1_p50_ms": statistics.median(b1), "b1_p90_ms": percentile(b1, 90), "fwd_p50_ms": statistics.median(fwd),
        "b8_img_s": 8000.0 / statistics.median(b8), "peak_mb": peak, **errors,
    }
    return row, first


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=None, help="timed frames per row (default: 10 CPU, 50 CUDA)")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--backends", help="comma-separated backend:precision rows (default: all for the device)")
    parser.add_argument("--markdown", type=Path, help="write the table as Markdown")
    check_io.add_arguments(parser)
    args = parser.parse_args()

    from space_clip_ros.device import resolve_device
    from space_clip_ros.inference import BackendUnavailableError
    from space_clip_ros.synthetic import render_scene

    cuda = args.device.startswith("cuda")
    rows_wanted = args.backends.split(",") if args.backends else (CUDA_ROWS if cuda else CPU_ROWS)
    if rows_wanted[0] != "eager:fp32":
        rows_wanted = ["eager:fp32"] + [r for r in rows_wanted if r != "eager:fp32"]
    for spec in rows_wanted:
        row_backend(spec)
    frame = render_scene()[0]
    model = full_size_model()
    if args.dry_run:
        return check_io.dry_run_done(args, f"{len(rows_wanted)} rows on {args.device}: {', '.join(rows_wanted)}")
    device = resolve_device(args.device)
    iters = args.iters or (50 if cuda else 10)
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    print(f"machine: {machine(device)}")
    print(f"frame {frame.shape[1]}x{frame.shape[0]} rgb8 -> depth at input size; full-size ViT-B/16 + released "
          f"decoder, random weights; {iters} timed frames per row (medians)", flush=True)

    rows, reference, skipped = [], None, []
    for spec in rows_wanted:
        try:
            row, depth = run_row(spec, model, device, frame, iters, warmup, reference)
        except (BackendUnavailableError, ImportError) as error:
            skipped.append(f"{spec}: {error}")
            print(f"skip {spec}: {error}", flush=True)
            continue
        if reference is None:
            reference = depth
        rows.append(row)
        print(f"done {spec} ({row['described']}; set-up {row['setup_s']:.1f} s)", flush=True)

    base = rows[0]["b1_p50_ms"]
    header = ("| backend:precision | b1 p50 ms | b1 p90 ms | fwd p50 ms | b8 img/s | peak MB | max rel | mean rel "
              "| x eager |")
    lines = [header, "|" + "---|" * 9]
    for row in rows:
        lines.append(f"| {row['backend']} | {row['b1_p50_ms']:.2f} | {row['b1_p90_ms']:.2f} | {row['fwd_p50_ms']:.2f} "
                     f"| {row['b8_img_s']:.1f} | {row['peak_mb']:.0f} | {row['max_rel']:.1e} | {row['mean_rel']:.1e} "
                     f"| {base / row['b1_p50_ms']:.2f} |")
    table = "\n".join(lines)
    print()
    print(table)
    for line in skipped:
        print(f"not run: {line}")
    best = min(rows, key=lambda r: r["b1_p50_ms"])
    check_io.write(args, f"eager fp32 {base:.2f} ms; best {best['backend']} {best['b1_p50_ms']:.2f} ms "
                   f"({base / best['b1_p50_ms']:.1f}x), b8 {best['b8_img_s']:.0f} img/s",
                   machine=machine(device), rows=rows, skipped=skipped)
    if args.markdown:
        args.markdown.write_text(f"machine: {machine(device)}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
