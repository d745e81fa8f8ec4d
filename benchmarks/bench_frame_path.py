"""The node's whole path after the model, per frame: eager against one replayed CUDA graph, in one run.

    python benchmarks/bench_frame_path.py [--device cuda] [--repeats 30]

One 1242x375 frame of the synthetic KITTI street (space_clip_ros.synthetic; the "model" depth is its exact depth
off by 1/1.3) through what the node does after the forward with everything on: scale alignment to a 120k-point
lidar cloud (parse, tf, projection, robust fit), temporal fusion (the camera moving 0.5 m a frame) and confidence,
range mask, colour image, organized cloud (with colour), LaserScan and filtered cloud, then the one download.
Two parts are timed apart:

  whole frame   FramePipeline.after_forward: the host's part (cloud parse, tf, uploads) + the device's + the one
                download of every output (~15 MB at this size): what the node waits for after the forward
  device path   the device's part alone (FramePipeline.stage on the uploaded inputs, or one graph.replay()), timed
                with CUDA events on a GPU (wall clock on the CPU), with the kernels it launches counted by the
                profiler (ops dispatched on the CPU)

each eager (as every backend but cudagraph runs it) and replayed through FrameGraphs and CUDA graphs (the cudagraph
backend's default; CUDA only), with ratios against eager. Target (H200): the device path replayed <= 0.3 ms.
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

    def pipeline_run(pipeline, state, stamp, keep=False):
        """One frame as FramePipeline.run does it after the forward."""
        state.reference.messages.clear()
        state.reference.add(cloud_message(cloud @ velo[:3, :3].T + velo[:3, 3], "velodyne", stamp))
        tree.add("odom", "base_link", stamp, (0.5 * stamp / 1e8, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))  # 0.5 m a frame
        frame = FrameRequest(rgb, (height, width), 1.0, camera, EVERYTHING, stamp_ns=stamp,
                             prepare=lambda f, d: prepare_frame(f, d, state, settings, tree, "camera_optical"))
        depth_in = model_depth.clone()
        host, _ = pipeline.after_forward([frame], [camera], [depth_in], settings)
        if frame.reference is None:
            raise SystemExit(f"the reference was refused: {frame.reference_reason}")
        if keep:  # the frame (its uploaded inputs) for the device path's timing, after the whole frame's
            last[pipeline] = frame
        return host

    last = {}  # pipeline -> its last frame, uploaded

    estimator = SimpleNamespace(device=device, backend_name="benchmark")
    variants = {"eager": FramePipeline(estimator)}
    if device.type == "cuda":
        variants["replayed"] = FramePipeline(estimator, FrameGraphs(cuda_graph(device)))
    whole, part, launched = {}, {}, {}
    for name, pipeline in variants.items():
        state, stamp = camera_state(), [0]

        def frame(pipeline=pipeline, state=state, stamp=stamp, keep=False):
            stamp[0] += 100_000_000
            return pipeline_run(pipeline, state, stamp[0], keep)

        for _ in range(3):  # history, carried history (a new signature), captured
            frame()
        whole[name] = median_ms(frame, args.repeats)
        [host] = frame(keep=True)
        assert host["alignment"][2] == 1.0, f"{name}: the alignment did not fit"  # state: aligned
        device_part = device_path(pipeline, last[pipeline], camera, settings, model_depth)
        part[name] = device_ms(device_part, args.repeats, device)
        launched[name] = kernels(device_part, device)
    base_whole, base_part = whole["eager"], part["eager"]
    counted = "kernels launched (profiler)" if device.type == "cuda" else "ops dispatched"
    print(f"the path after the model on {device}, {width}x{height}, every output, alignment (120k-point cloud) and "
          f"fusion on; medians of {max(5, args.repeats)} frames")
    print(f"| path | whole frame ms | x eager | device path ms | x eager | {counted} |\n|---|---|---|---|---|---|")
    for name in variants:
        print(f"| {name} | {whole[name]:.3f} | {whole[name] / base_whole:.3f} | {part[name]:.3f} | "
              f"{part[name] / base_part:.3f} | {launched[name]} |")
    best = min(variants, key=lambda n: part[n])
    check_io.write(args, f"device path {part[best]:.3f} ms ({best}, {launched[best]} {counted.split()[0]}), whole "
                   f"frame {whole[best]:.3f} ms on {device}; eager {base_part:.3f} / {base_whole:.3f} ms",
                   whole_ms=whole, device_path_ms=part, launched=launched, counted=counted)
    return 0


def device_path(pipeline, frame, camera, settings, model_depth):
    """The device's part of a frame again, on the inputs already uploaded (``frame``, the last one): one replay of
    its captured program, or (eager) the stage on the same inputs. The camera's state moves on as with a new frame."""
    import torch

    graphs = pipeline.graphs
    if graphs is not None:
        replays = [entry.replay for entry in graphs._entries.values() if entry.replay is not None]
        assert len(replays) == 1, "one captured signature expected"
        return replays[0]
    depth = model_depth.clone()

    def stage():
        depth.copy_(model_depth)  # as the graph's input buffer takes each frame's depth
        with torch.inference_mode():
            pipeline.stage([frame], [camera], [depth], settings)
    return stage


def device_ms(fn, repeats, device):
    """Median milliseconds of ``fn`` on ``device``: CUDA events around each call on a GPU, wall clock elsewhere."""
    import statistics

    import torch
    from bench_node import median_ms

    if device.type != "cuda":
        return median_ms(fn, repeats)
    fn()
    times = []
    for _ in range(max(5, repeats)):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def kernels(fn, device):
    """What ``fn`` launches: CUDA kernels and copies seen by the profiler on a GPU, ops dispatched elsewhere."""
    import torch

    from space_clip_ros.sync_guard import count_ops

    if device.type != "cuda":
        return count_ops(fn)["ops"]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        fn()
        torch.cuda.synchronize(device)
    return sum(1 for event in profile.events() if event.device_type == torch.autograd.DeviceType.CUDA)


if __name__ == "__main__":
    sys.exit(main())
