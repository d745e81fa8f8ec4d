"""End-to-end latency and throughput of depth_node against the bare model, for 1 and for 8 cameras, in one run.

    python benchmarks/bench_node.py [--cameras 1,8] [--frames 8] [--device cpu] [--backend auto] [--rate 30]

Uses a full-size model (ViT-B/16 tower, released decoder) with RANDOM weights: timing only, since a forward pass
costs the same whatever the weights. Every camera sends a 1242x375 rgb8 frame with camera_info. Prints, per camera
count N:
  bare      DepthEstimator.predict_tensor + download for the N frames as one batch, in this process
  latency   stamp -> depth/image and stamp -> depth/points received, p50 / p90 over all cameras' frames, when all N
            cameras send one frame together and wait for the outputs (the node batches them into one forward)
  rate      every camera publishing at --rate Hz for a while: output frames per second per camera, and the share of
            frames dropped (latest-frame-only: a camera faster than the model loses frames, never latency)
and first, in this process, what each output costs per frame on the model's device against the bare forward of one
frame: the organized cloud (depth/points), the LaserScan (depth/scan) and the filtered cloud (depth/points_filtered)
at the node's defaults, each with its download, and their message bytes. Their depth is the exact depth of the
synthetic KITTI-geometry street (space_clip_ros.synthetic) at 1242x375, since random weights give no scene.
--outputs-only stops after that table.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "test"), str(Path(__file__).resolve().parent)]
import check_io  # noqa: E402


def _percentile(values, q):
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def median_ms(run, repeats):
    run()
    times = []
    for _ in range(max(5, repeats)):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def output_costs(device, forward_ms: float, repeats: int) -> dict:
    """Per-frame cost of the node's optional outputs on ``device`` against a forward of ``forward_ms``."""
    import torch

    from space_clip_ros.dense_outputs import cloud_buffer, mask_range
    from space_clip_ros.node.frame_pipeline import FILTERED_CAPACITY, KEPT_CAPACITY
    from space_clip_ros.node.settings import NodeSettings
    from space_clip_ros.planner_outputs import filtered_points_static, laser_scan, scan_geometry, scan_rows
    from space_clip_ros.sync_guard import count_ops
    from space_clip_ros.synthetic import KITTI_K, render_scene

    s = NodeSettings.from_values({})
    _, exact = render_scene()
    raw = torch.from_numpy(np.where(exact > 0, exact, np.inf).astype(np.float32)).to(device)  # sky: beyond range
    depth = mask_range(raw.clone(), s.min_depth, s.max_depth)
    fx, fy, cx, cy = KITTI_K
    height, width = depth.shape
    geometry = scan_geometry(width, height, [fx, 0, cx, 0, fy, cy, 0, 0, 1], [fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0],
                             s.scan_height)
    index = torch.from_numpy(geometry.index).to(device)
    def filtered():  # as the node: static shapes, the count and a capacity's rows in one download
        kept, count = filtered_points_static(depth, fx, fy, cx, cy, s.points_filtered_min_range,
                                             s.points_filtered_max_range, s.points_filtered_edge_threshold,
                                             s.points_filtered_voxel, s.points_filtered_stride,
                                             capacity=KEPT_CAPACITY)
        return kept[:FILTERED_CAPACITY], count

    def download(outputs):
        cpu = [t.cpu().numpy() for t in (outputs if isinstance(outputs, tuple) else (outputs,))]
        return cpu[0][:int(cpu[1])] if len(cpu) == 2 else cpu[0]

    computes = {
        "organized cloud (depth/points)": lambda: cloud_buffer(depth, fx, fy, cx, cy),
        "scan (depth/scan)": lambda: laser_scan(scan_rows(raw, geometry, s.min_depth, s.max_depth), geometry,
                                                s.scan_range_min, s.scan_range_max, index),
        "filtered cloud (depth/points_filtered)": filtered,
    }
    runs = {name: (lambda compute=compute: download(compute())) for name, compute in computes.items()}
    costs = {name: median_ms(run, repeats) for name, run in runs.items()}
    sizes = {name: run().nbytes for name, run in runs.items()}
    ops = {name: count_ops(compute) for name, compute in computes.items()}
    both = costs["scan (depth/scan)"] + costs["filtered cloud (depth/points_filtered)"]
    organized = sizes["organized cloud (depth/points)"]
    print(f"\nper-frame output costs on {device}, {width}x{height}, node defaults (scan_height {s.scan_height}, "
          f"voxel {s.points_filtered_voxel} m, range {s.points_filtered_min_range}-{s.points_filtered_max_range} m, "
          f"edge threshold {s.points_filtered_edge_threshold}), median of {max(5, repeats)}")
    print("| output | ms | x forward | bytes | x organized cloud bytes | ops | data-dependent ops |")
    print("|---|---|---|---|---|---|---|")
    print(f"| forward, 1 frame (bare) | {forward_ms:.2f} | 1.000 | | | | |")
    for name in runs:
        print(f"| {name} | {costs[name]:.3f} | {costs[name] / forward_ms:.4f} | {sizes[name]:,} | "
              f"{sizes[name] / organized:.4f} | {ops[name]['ops']} | {ops[name]['data_dependent']} |")
    print(f"| scan + filtered cloud | {both:.3f} | {both / forward_ms:.4f} | | | | |")
    return {"forward_ms": forward_ms, "costs_ms": costs, "bytes": sizes, "scan_and_filtered_ms": both, "ops": ops}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", default="1,8", help="comma-separated camera counts (default 1,8)")
    parser.add_argument("--frames", type=int, default=8, help="timed rounds per camera count")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate for the sustained-rate part (Hz)")
    parser.add_argument("--seconds", type=float, default=None, help="length of the sustained-rate part")
    parser.add_argument("--outputs-only", action="store_true", help="only the per-output cost table")
    parser.add_argument("--subscribe", default="depth,points",
                        help="outputs to subscribe to: comma-separated names or 'all' (every output the node makes: "
                             "the node computes only what someone subscribes to)")
    parser.add_argument("--wait-compiled", type=float, default=300.0,
                        help="seconds to wait for the node's background compilation before timing (CUDA)")
    check_io.add_arguments(parser)
    args = parser.parse_args()
    try:
        counts = [int(c) for c in args.cameras.split(",")]
    except ValueError:
        parser.error(f"--cameras takes comma-separated counts, got {args.cameras!r}")
    if not counts or min(counts) < 1 or args.frames < 1:
        parser.error("--cameras and --frames must be positive")
    outputs_all = ("depth", "info", "points", "colored", "scan", "points_filtered", "confidence")
    subscribed = outputs_all if args.subscribe == "all" else tuple(args.subscribe.split(","))
    if not set(subscribed) <= set(outputs_all) or not {"depth", "points"} <= set(subscribed):
        parser.error(f"--subscribe takes 'all' or names from {outputs_all}, depth and points among them")

    import torch
    from bench_inference import full_size_model

    from space_clip_ros import DepthEstimator, save_checkpoint
    from space_clip_ros.synthetic import KITTI_K, render_scene

    tmp = Path(tempfile.mkdtemp(prefix="space_clip_bench_"))
    model = full_size_model()
    ckpt = save_checkpoint(model, tmp / "full_random.pt", embed_backbone=True,
                           provenance={"trained": True, "source": "benchmark: random weights, timing only"})
    rgb, _ = render_scene()
    height, width = rgb.shape[:2]
    if args.dry_run:
        if not args.outputs_only:
            import rclpy  # noqa: F401 - the node part needs it: fail here, not on the GPU machine
            import ros_harness  # noqa: F401
        what = "output costs" + ("" if args.outputs_only else f", then the node with {counts} cameras")
        return check_io.dry_run_done(args, f"{what} on {args.device} ({args.backend})")
    estimator = DepthEstimator(model, device=args.device, backend=args.backend)
    estimator.wait_compiled(args.wait_compiled)
    backend = estimator.backend.describe()
    bare = {}
    for n in counts:
        frames, sizes, scales = [rgb] * n, [(height, width)] * n, [1.0] * n

        def run(frames=frames, sizes=sizes, scales=scales):
            for depth in estimator.predict_tensor(frames, sizes, scales):
                depth.cpu().numpy()

        for _ in range(2):
            run()
        times = []
        for _ in range(max(3, args.frames // 2)):
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) * 1000)
        bare[n] = statistics.median(times)
    outputs = output_costs(estimator.device, bare[counts[0]] / counts[0], args.frames)
    estimator = None  # free it before the node runs
    if args.outputs_only:
        check_io.write(args, f"scan + filtered cloud {outputs['scan_and_filtered_ms']:.2f} ms a frame on "
                       f"{args.device} ({outputs['scan_and_filtered_ms'] / outputs['forward_ms']:.2f}x the forward)",
                       outputs=outputs, backend=backend)
        return 0

    import rclpy
    from ros_harness import Harness, camera_info_msg, rgb_image_msg, ros_environment, start_node

    env = ros_environment(tmp)
    os.environ.update(env)
    rclpy.init()
    results = {}
    fx, fy, cx, cy = KITTI_K
    try:
        for n in counts:
            names = [f"cam{i}" for i in range(n)] if n > 1 else []
            params = {"checkpoint": str(ckpt), "device": args.device, "backend": args.backend}
            if names:
                params["cameras"] = "[" + ",".join(names) + "]"
            proc = start_node(env, "/bench", params, tmp / f"node_{n}.log")
            rigs = [Harness(f"/bench/{name}", "/bench", name) if name else Harness("/bench")
                    for name in (names or [""])]
            try:
                for h in rigs:
                    h.subscribe_outputs(subscribed)
                for h in rigs:
                    h.wait_for_node(timeout=300)

                def send_all(rigs=rigs):
                    stamps = []
                    for h in rigs:
                        stamp = h.node.get_clock().now().to_msg()
                        h.info_pub.publish(camera_info_msg(stamp, width, height, fx, fy, cx, cy))
                        h.image_pub.publish(rgb_image_msg(rgb, stamp))
                        stamps.append(stamp)
                    return stamps

                def wait_all(stamps, key, rigs=rigs):
                    out = []
                    for h, stamp in zip(rigs, stamps, strict=True):
                        h.spin_until(lambda h=h, stamp=stamp: any(m.header.stamp == stamp for m in h.received[key]),
                                     300, key)
                        arrived = next(t for t, m in zip(h.arrival[key], h.received[key], strict=True)
                                       if m.header.stamp == stamp)
                        out.append((arrived - (stamp.sec + stamp.nanosec / 1e9)) * 1000)
                    return out

                for _ in range(2):  # warm-up
                    wait_all(send_all(), "points")
                # The node's default on CUDA compiles in the background: time the compiled path.
                compile_wait = time.time()
                while time.time() - compile_wait < args.wait_compiled:
                    status = rigs[0].status() or {}
                    if status.get("compile", "off") in ("off", "compiled") or \
                            status.get("compile", "").startswith("failed"):
                        break
                    send_all()
                    for h in rigs:
                        h.executor.spin_once(timeout_sec=0.2)
                compiled_after = time.time() - compile_wait
                state = (rigs[0].status() or {}).get("compile", "?")
                print(f"{n} camera(s): node's compile state '{state}' after {compiled_after:.1f} s more", flush=True)
                depth_lat, points_lat = [], []
                for _ in range(args.frames):
                    stamps = send_all()
                    depth_lat += wait_all(stamps, "depth")
                    points_lat += wait_all(stamps, "points")
                    for key in subscribed:  # every output of every frame, or the step fails here
                        wait_all(stamps, key)
                print(f"{n} camera(s): every frame's {', '.join(subscribed)} received", flush=True)
                # Sustained: every camera at --rate Hz.
                seconds = args.seconds or max(5.0, 6 * bare[n] / 1000)
                before = [len(h.received["depth"]) for h in rigs]
                sent, start, period = 0, time.time(), 1.0 / args.rate
                while time.time() - start < seconds:
                    tick = time.time()
                    send_all()
                    sent += 1
                    for h in rigs:
                        h.executor.spin_once(timeout_sec=0)
                    while time.time() - tick < period:
                        for h in rigs:
                            h.executor.spin_once(timeout_sec=0.001)
                elapsed = time.time() - start
                settle = time.time()
                while time.time() - settle < max(2.0, 2 * bare[n] / 1000):
                    for h in rigs:
                        h.executor.spin_once(timeout_sec=0.01)
                got = [len(h.received["depth"]) - b for h, b in zip(rigs, before, strict=True)]
                results[n] = {
                    "compile": state,
                    "depth_p50": statistics.median(depth_lat), "depth_p90": _percentile(depth_lat, 90),
                    "points_p50": statistics.median(points_lat), "points_p90": _percentile(points_lat, 90),
                    "out_hz": statistics.mean(got) / elapsed, "in_hz": sent / elapsed,
                    "dropped": 1.0 - sum(got) / max(1, sent * len(rigs)),
                }
            finally:
                proc.terminate()
                proc.wait(timeout=60)
                for h in rigs:
                    h.destroy()
    finally:
        rclpy.try_shutdown()

    print(f"\nspace_clip_ros node benchmark: {width}x{height} rgb8 per camera, ViT-B/16 + released decoder (random "
          f"weights), backend {backend}, torch {torch.__version__}, {os.cpu_count()} CPU cores, {args.frames} rounds")
    print("| cameras | bare batch ms | stamp->depth p50/p90 ms | stamp->points p50/p90 ms | depth / bare | "
          "out Hz per camera (in Hz) | dropped |")
    print("|---|---|---|---|---|---|---|")
    for n in counts:
        r = results[n]
        print(f"| {n} | {bare[n]:.1f} | {r['depth_p50']:.1f} / {r['depth_p90']:.1f} | {r['points_p50']:.1f} / "
              f"{r['points_p90']:.1f} | {r['depth_p50'] / bare[n]:.2f} | {r['out_hz']:.2f} ({r['in_hz']:.1f}) | "
              f"{100 * r['dropped']:.0f}% |")
    headline = "; ".join(f"{n} cam: depth p50 {results[n]['depth_p50']:.1f} ms, {results[n]['out_hz']:.1f} Hz out of "
                         f"{results[n]['in_hz']:.1f}, {100 * results[n]['dropped']:.0f}% dropped" for n in counts)
    check_io.write(args, headline, bare_ms=bare, nodes=results, outputs=outputs, backend=backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
