"""The node's whole path after the model, per frame: eager against one replayed CUDA graph, in one run.

    python benchmarks/bench_frame_path.py [--device cuda] [--repeats 30]

One 1242x375 frame of the synthetic KITTI street (space_clip_ros.synthetic; the "model" depth is its exact depth
off by 1/1.3) through what the node does after the forward with everything on: scale alignment to a 120k-point
lidar cloud (parse, tf, projection, robust fit), temporal fusion (the camera moving 0.5 m a frame) and confidence,
range mask, colour image, organized cloud, LaserScan and filtered cloud, then the one download. The rows:

  eager      FramePipeline.upload + stage + download, as every backend but cudagraph runs it
  replayed   the same through FrameGraphs and CUDA graphs (space_clip_ros.node.frame_graphs): the cudagraph
             backend's default; CUDA only

with ops per frame (space_clip_ros.sync_guard.count_ops: what eager launches one by one) and replayed / eager.
The issue's target (H200): scan + filtered cloud + alignment + fusion <= 0.3 ms a frame, organized cloud's download
on top.
"""

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "test"), str(Path(__file__).resolve().parent)]
import check_io  # noqa: E402

EVERYTHING = frozenset({"colored", "points", "scan", "points_filtered", "confidence"})


def main() -> int:
    args = check_io.parse(check_io.parser_for(__doc__, repeats=30))
    import torch
    from bench_alignment import TRUE_SCALE, cloud_message, lidar_scan, rig
    from bench_node import median_ms

    from space_clip_ros.node.camera_state import CameraState
    from space_clip_ros.node.frame_graphs import FrameGraphs, cuda_graph
    from space_clip_ros.node.frame_pipeline import CameraModel, FramePipeline, FrameRequest
    from space_clip_ros.node.reference import prepare_frame
    from space_clip_ros.node.settings import NodeSettings
    from space_clip_ros.sync_guard import count_ops
    from space_clip_ros.synthetic import KITTI_K, render_scene

    device = torch.device(check_io.device_for(args))
    rgb, depth = render_scene(intrinsics=KITTI_K)
    height, width = depth.shape
    fx, fy, cx, cy = KITTI_K
    camera = CameraModel(width, height, (fx, 0, cx, 0, fy, cy, 0, 0, 1), (fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0))
    settings = NodeSettings.from_values({"scale_reference": "points", "temporal_filter": "odom", "points_rgb": True,
                                         "odom_frame": "odom"})
    tree, velo = rig()
    points = lidar_scan(depth, KITTI_K)
    cloud = np.concatenate([points] * math.ceil(120_000 / points.shape[0]))[:120_000]
    model_depth = torch.from_numpy(np.where(depth > 0, depth / TRUE_SCALE, 100.0).astype(np.float32)).to(device)
    if args.dry_run:
        return check_io.dry_run_done(args, f"the path after the model, eager and replayed, on {args.device}")

    def camera_state():
        state = CameraState("", 30)
        state.refine(settings)  # its reference queue, aligner and fusion, as the node's activation makes them
        return state

    def pipeline_run(pipeline, state, stamp):
        """One frame as FramePipeline.run does it after the forward."""
        state.reference.messages.clear()
        state.reference.add(cloud_message(cloud @ velo[:3, :3].T + velo[:3, 3], "velodyne", stamp))
        tree.add("odom", "base_link", stamp, (0.5 * stamp / 1e8, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))  # 0.5 m a frame
        frame = FrameRequest(rgb, (height, width), 1.0, camera, EVERYTHING, stamp_ns=stamp,
                             prepare=lambda f, d: prepare_frame(f, d, state, settings, tree, "camera_optical"))
        host, _ = pipeline.after_forward([frame], [camera], [model_depth.clone()], settings)
        if frame.reference is None:
            raise SystemExit(f"the reference was refused: {frame.reference_reason}")
        return host

    estimator = SimpleNamespace(device=device, backend_name="benchmark")
    variants = {"eager": FramePipeline(estimator)}
    if device.type == "cuda":
        variants["replayed (CUDA graph)"] = FramePipeline(estimator, FrameGraphs(cuda_graph(device)))
    costs, ops = {}, {}
    for name, pipeline in variants.items():
        state, stamp = camera_state(), [0]

        def frame(pipeline=pipeline, state=state, stamp=stamp):
            stamp[0] += 100_000_000
            return pipeline_run(pipeline, state, stamp[0])

        for _ in range(3):  # history, carried history (a new signature), captured
            frame()
        costs[name] = median_ms(frame, args.repeats)
        ops[name] = count_ops(frame)["ops"] if pipeline.graphs is None else "1 replay"
        [host] = frame()
        assert host["alignment"][2] == 1.0, f"{name}: the alignment did not fit"  # state: aligned
    base = costs["eager"]
    print(f"the path after the model on {device}, {width}x{height}, every output, alignment (120k-point cloud) and "
          f"fusion on; median of {max(5, args.repeats)} frames")
    print("| path | ms a frame | x eager | ops dispatched |\n|---|---|---|---|")
    for name, ms in costs.items():
        print(f"| {name} | {ms:.3f} | {ms / base:.3f} | {ops[name]} |")
    best = min(costs.values())
    check_io.write(args, f"path after the model {best:.3f} ms a frame on {device} (eager {base:.3f} ms)",
                   costs_ms=costs, ops=ops)
    return 0


if __name__ == "__main__":
    sys.exit(main())
