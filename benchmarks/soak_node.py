"""Soak test of depth_node: many frames at the camera's maximum rate, then many lifecycle cycles, watching the node
process's memory, threads and file descriptors, the latency and what was dropped.

    python benchmarks/soak_node.py [--frames 10000] [--cycles 50] [--size 1242x375] [--device cpu] [--backend auto]
    python benchmarks/soak_node.py --checkpoint my.pt --frames 300 --cycles 5      # a short run

Without --checkpoint a full-size model (ViT-B/16 tower, released decoder) with RANDOM weights is used: timing and
memory only. One publisher (this process) sends rgb8 frames with camera_info as fast as it can; the node keeps only
the newest frame (older ones are dropped and counted). Prints a table (RSS, threads and fds of the node process over
time; latency p50/p99 against the bare model's forward in this process; output rate; drops) and the checks:

  - the node runs to the end (no crash) and every lifecycle transition succeeds;
  - RSS grows by at most 20 MB from the end of the warm-up (the first 10% of frames) to the end;
  - no queueing: stamp->depth p99 stays within 3 bare forwards + 250 ms, and the last third's p50 is not above the
    first third's by more than one bare forward or half the first third's p50, whichever is more (frames queueing
    at these rates would add seconds per second; with a tiny model's 20 ms forward, DDS delivery at 130 frames/s
    on two cores alone moves the p50 of a third by 15-25 ms between runs);
  - the lifecycle cycles leave threads and fds as they were and RSS within 20 MB of after the first cycle.

Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "test"), str(Path(__file__).resolve().parent)]

RSS_GROWTH_MB = 20.0


def proc_stats(pid: int) -> Tuple[float, int, int]:
    """(RSS MiB, threads, open fds) of a process, from /proc."""
    rss, threads = 0.0, 0
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024.0
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads, len(os.listdir(f"/proc/{pid}/fd"))


def full_size_checkpoint(folder: Path) -> Path:
    from bench_inference import full_size_model

    from space_clip_ros import save_checkpoint

    return save_checkpoint(full_size_model(), folder / "full_random.pt", embed_backbone=True,
                           provenance={"trained": True, "source": "soak benchmark: random weights"})


def bare_forward_ms(checkpoint: Path, rgb: np.ndarray, device: str, backend: str) -> Tuple[float, str]:
    from space_clip_ros import DepthEstimator, load_checkpoint

    estimator = DepthEstimator(load_checkpoint(checkpoint), device=device, backend=backend)
    size = rgb.shape[:2]
    for _ in range(2):
        estimator.predict_tensor([rgb], [size], [1.0])[0].cpu()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        estimator.predict_tensor([rgb], [size], [1.0])[0].cpu().numpy()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), estimator.backend.describe()


def soak(checkpoint: Path, frames: int, cycles: int, size: Tuple[int, int], device: str, backend: str,
         workdir: Path, log=print) -> Dict:
    """Run the soak; returns the measurements and ``failures`` (a list of the checks that did not hold)."""
    import rclpy
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    from ros_harness import Harness, camera_info_msg, rgb_image_msg, ros_environment, start_node

    from space_clip_ros.synthetic import KITTI_K, render_scene

    width, height = size
    fx, fy, cx, cy = KITTI_K
    rgb, _ = render_scene((height, width), (fx * width / 1242, fy * height / 375, cx * width / 1242,
                                            cy * height / 375))
    bare_ms, described = bare_forward_ms(checkpoint, rgb, device, backend)
    env = ros_environment(workdir)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    rclpy.init()
    out: Dict = {"bare_ms": bare_ms, "backend": described, "failures": []}
    proc = start_node(env, "/soak", {"checkpoint": str(checkpoint), "device": device, "backend": backend},
                      workdir / "node.log")
    h = Harness("/soak")
    try:
        h.subscribe_outputs(("depth",))
        h.wait_for_node(timeout=300)
        samples: List[Tuple[float, int, float, int, int]] = []  # (time, frames sent, rss, threads, fds)
        start = last_sample = time.time()
        sent, warm_sent = 0, max(1, frames // 10)
        warm_index = None
        while sent < frames:
            if proc.poll() is not None:
                raise RuntimeError(f"the node exited with {proc.returncode} after {sent} frames")
            stamp = h.node.get_clock().now().to_msg()
            h.info_pub.publish(camera_info_msg(stamp, width, height, fx, fy, cx, cy))
            h.image_pub.publish(rgb_image_msg(rgb, stamp))
            sent += 1
            h.executor.spin_once(timeout_sec=0)
            now = time.time()
            if now - last_sample >= 1.0 or sent == warm_sent or sent == frames:
                samples.append((now - start, sent, *proc_stats(proc.pid)))
                last_sample = now
                if sent == warm_sent and warm_index is None:
                    warm_index = len(samples) - 1
        elapsed = time.time() - start
        settle = time.time()
        while time.time() - settle < max(2.0, 3 * bare_ms / 1000):
            h.executor.spin_once(timeout_sec=0.01)
        samples.append((time.time() - start, sent, *proc_stats(proc.pid)))
        latencies = [(t - (m.header.stamp.sec + m.header.stamp.nanosec / 1e9)) * 1000
                     for t, m in zip(h.arrival["depth"], h.received["depth"], strict=True)]
        status = h.fresh_status(lambda s: True, 30)
        out.update(frames=sent, seconds=elapsed, in_hz=sent / elapsed, outputs=len(latencies),
                   out_hz=len(latencies) / elapsed, dropped=int(status["frames_dropped"]), samples=samples,
                   warm_index=warm_index or 0, p50=float(np.percentile(latencies, 50)) if latencies else float("nan"),
                   p99=float(np.percentile(latencies, 99)) if latencies else float("nan"))
        third = max(1, len(latencies) // 3)
        out["p50_first"] = statistics.median(latencies[:third]) if latencies else float("nan")
        out["p50_last"] = statistics.median(latencies[-third:]) if latencies else float("nan")
        warm_rss = samples[out["warm_index"]][2]
        out["rss_growth"] = max(s[2] for s in samples[out["warm_index"]:]) - warm_rss
        log(f"frames done: {sent} in {elapsed:.1f} s, {len(latencies)} outputs")

        # Lifecycle cycles: deactivate, cleanup, configure, activate (the node starts active).
        client = h.node.create_client(ChangeState, "depth_node/change_state")
        steps = (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP, Transition.TRANSITION_CONFIGURE,
                 Transition.TRANSITION_ACTIVATE)
        cycle_stats = [proc_stats(proc.pid)]
        for cycle in range(cycles):
            for transition in steps:
                # One request per transition (a configure that loads the model can take seconds; asking again
                # would request a transition the new state does not have).
                response = h.call(client, ChangeState.Request(transition=Transition(id=transition)),
                                  f"lifecycle transition {transition}", timeout=300, attempt_s=300)
                if not response.success:
                    out["failures"].append(f"lifecycle transition {transition} failed in cycle {cycle + 1}")
            cycle_stats.append(proc_stats(proc.pid))
        out["cycles"] = cycles
        out["cycle_stats"] = cycle_stats
        # A frame after the cycles is still processed.
        stamp = h.node.get_clock().now().to_msg()
        h.info_pub.publish(camera_info_msg(stamp, width, height, fx, fy, cx, cy))
        h.image_pub.publish(rgb_image_msg(rgb, stamp))
        h.spin_until(lambda: any(m.header.stamp == stamp for m in h.received["depth"]), 120,
                     "depth after the lifecycle cycles")
        if proc.poll() is not None:
            out["failures"].append(f"the node exited with {proc.returncode}")
    finally:
        h.destroy()
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)
        rclpy.try_shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    out["failures"] += checks(out)
    return out


def checks(r: Dict) -> List[str]:
    failures = []
    if r["outputs"] == 0:
        failures.append("no depth was published")
    if r["rss_growth"] > RSS_GROWTH_MB:
        failures.append(f"RSS grew {r['rss_growth']:.1f} MB after the warm-up (limit {RSS_GROWTH_MB:g})")
    bound = 3 * r["bare_ms"] + 250.0
    if r["p99"] > bound:
        failures.append(f"latency p99 {r['p99']:.0f} ms above {bound:.0f} ms (3 bare forwards + 250 ms): queueing")
    if r["p50_last"] > r["p50_first"] + max(r["bare_ms"], 0.5 * r["p50_first"]):
        failures.append(f"latency grew: p50 {r['p50_first']:.0f} ms in the first third, {r['p50_last']:.0f} ms in "
                        "the last")
    if r.get("cycles"):
        first, last = r["cycle_stats"][1], r["cycle_stats"][-1]
        if last[1] != first[1] or last[2] != first[2]:
            failures.append(f"lifecycle cycles changed threads {first[1]} -> {last[1]} or fds {first[2]} -> "
                            f"{last[2]}")
        if last[0] - first[0] > RSS_GROWTH_MB:
            failures.append(f"lifecycle cycles grew RSS by {last[0] - first[0]:.1f} MB (limit {RSS_GROWTH_MB:g})")
    return failures


def report(r: Dict, size: Tuple[int, int], device: str) -> str:
    import torch

    lines = [f"\ndepth_node soak: {r['frames']} frames {size[0]}x{size[1]} rgb8 at the publisher's maximum rate, "
             f"backend {r['backend']}, {device}, torch {torch.__version__}, {os.cpu_count()} CPU cores",
             "| at s | frames sent | node RSS MiB | threads | fds |", "|---|---|---|---|---|"]
    samples = r["samples"]
    picks = sorted(set([0, r["warm_index"]] + list(range(0, len(samples), max(1, len(samples) // 8)))
                       + [len(samples) - 1]))
    for i in picks:
        t, n, rss, threads, fds = samples[i]
        lines.append(f"| {t:.0f} | {n}{' (warm-up end)' if i == r['warm_index'] else ''} | {rss:.0f} | {threads} | "
                     f"{fds} |")
    lines += ["", "| measure | value | against the bare forward |", "|---|---|---|",
              f"| bare forward (this process) | {r['bare_ms']:.1f} ms | 1.00 |",
              f"| stamp->depth p50 / p99 | {r['p50']:.1f} / {r['p99']:.1f} ms | {r['p50'] / r['bare_ms']:.2f} / "
              f"{r['p99'] / r['bare_ms']:.2f} |",
              f"| p50 first third / last third | {r['p50_first']:.1f} / {r['p50_last']:.1f} ms | |",
              f"| input / output rate | {r['in_hz']:.1f} / {r['out_hz']:.2f} Hz | |",
              f"| frames dropped (newest kept) | {r['dropped']} of {r['frames']} | |",
              f"| RSS growth after warm-up | {r['rss_growth']:.1f} MiB | |"]
    if r.get("cycles"):
        (rss0, thr0, fd0), (rss1, thr1, fd1), (rss2, thr2, fd2) = (r["cycle_stats"][0], r["cycle_stats"][1],
                                                                    r["cycle_stats"][-1])
        lines.append(f"| {r['cycles']} lifecycle cycles: RSS / threads / fds before, after 1, after all | "
                     f"{rss0:.0f}, {rss1:.0f}, {rss2:.0f} MiB / {thr0}, {thr1}, {thr2} / {fd0}, {fd1}, {fd2} | |")
    lines.append("checks: " + ("all hold" if not r["failures"] else "FAILED: " + "; ".join(r["failures"])))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--frames", type=int, default=10000)
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--size", default="1242x375", help="WIDTHxHEIGHT of the frames")
    parser.add_argument("--checkpoint", type=Path, help="default: a full-size model with random weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    workdir = Path(tempfile.mkdtemp(prefix="space_clip_soak_"))
    checkpoint = args.checkpoint or full_size_checkpoint(workdir)
    result = soak(checkpoint, args.frames, args.cycles, (width, height), args.device, args.backend, workdir)
    print(report(result, (width, height), args.device))
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
