"""The node's per-frame extras now against an earlier revision's, in one process, on the CPU.

    python benchmarks/bench_extras_against.py [--rev 718399d] [--repeats 41]

``--rev`` (default 718399d: the last commit before the static-shape per-frame path of issue 24) is taken out of this
repository with ``git archive`` into a temporary folder as the package ``space_clip_ros_then``, so both versions run
side by side on the same data: alignment of a 120k-point lidar cloud (parse, tf, projection, robust fit; once all
in view, once a spinning lidar's 360 degrees with half behind the camera), temporal fusion + confidence, and the
filtered cloud for Nav2 (range, flying pixels, 5 cm voxels). Each timing alternates the two versions call by call;
the table has the medians and now / then. Scene and lidar as benchmarks/bench_alignment.py.
"""

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "test"), str(ROOT / "benchmarks")]


def load_then(rev: str, folder: Path):
    """The package at ``rev`` as ``space_clip_ros_then`` (its imports within the package are relative)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "space_clip_ros"], capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"git archive {rev} failed: {archive.stderr.decode().strip()} (a full clone is needed)")
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    (folder / "space_clip_ros").rename(folder / "space_clip_ros_then")
    sys.path.insert(0, str(folder))


def paired(then, now, repeats):
    """Medians (ms) of ``then`` and ``now``, called alternately."""
    for fn in (then, now, then, now):
        fn()
    a, b = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        then()
        a.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        now()
        b.append((time.perf_counter() - start) * 1e3)
    return sorted(a)[repeats // 2], sorted(b)[repeats // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default="718399d", help="the revision to compare with (default 718399d)")
    parser.add_argument("--repeats", type=int, default=41)
    args = parser.parse_args()
    import torch
    from bench_alignment import TRUE_SCALE, cloud_message, lidar_scan, node_defaults, rig

    from space_clip_ros.alignment import ScaleAligner
    from space_clip_ros.node.reference import ReferenceQueue, reference_cloud
    from space_clip_ros.planner_outputs import filtered_points_static
    from space_clip_ros.synthetic import KITTI_K, render_scene
    from space_clip_ros.temporal import TemporalFusion

    folder = Path(tempfile.mkdtemp(prefix="space_clip_then_"))
    load_then(args.rev, folder)
    import space_clip_ros_then.alignment as then_alignment
    import space_clip_ros_then.planning as then_planning
    import space_clip_ros_then.ros.reference as then_reference
    import space_clip_ros_then.temporal as then_temporal

    torch.set_num_threads(2)
    rgb, depth = render_scene(intrinsics=KITTI_K)
    size = depth.shape
    fx, fy, cx, cy = KITTI_K
    k = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    tree, velo = rig()
    points = lidar_scan(depth, KITTI_K)
    in_view = np.concatenate([points] * math.ceil(120_000 / points.shape[0]))[:120_000]
    spinning = np.concatenate([in_view[:60_000], in_view[:60_000] * np.array([-1.0, 1.0, -1.0], np.float32)])
    model = torch.from_numpy(np.where(depth > 0, depth / TRUE_SCALE, 100.0).astype(np.float32))
    node = node_defaults()

    def alignments(cloud):
        msg = cloud_message(cloud @ velo[:3, :3].T + velo[:3, 3], "velodyne", 1_000_000_000)
        now_queue, then_queue = ReferenceQueue("points"), then_reference.ReferenceQueue("points")
        now_queue.add(msg)
        then_queue.add(msg)
        now_aligner = ScaleAligner(**node.alignment())
        then_aligner = then_alignment.ScaleAligner(**node.alignment())

        def now():
            pairs = reference_cloud(now_queue, tree, "camera_optical", 1_000_000_000, 50_000_000, "",
                                    0.1).project(size, KITTI_K, 0.1, 80.0)
            return now_aligner.resolve(now_aligner.align_static(model.clone(), pairs, 1_000_000_000).cpu())

        def then():
            pairs = then_reference.reference_depth(then_queue, tree, "camera_optical", 1_000_000_000, size, k, None,
                                                   "plumb_bob", 50_000_000, "", 0.1, 80.0)
            return then_aligner.align(model.clone(), pairs, 1_000_000_000)
        return then, now

    stamp = [0]
    now_fusion = TemporalFusion(**node.fusion())
    then_fusion = then_temporal.TemporalFusion(node.temporal_gate, node.temporal_max_frames)

    def fusing(fusion, module):
        def run():
            stamp[0] += 1
            current = model.clone()
            return module.confidence(current, fusion.fuse(current, KITTI_K, np.eye(4), stamp[0]), 0.1)
        return run

    def now_filtered():
        kept, count = filtered_points_static(model, fx, fy, cx, cy, 0.3, 10.0, 0.1, 0.05, 1, capacity=131072)
        return kept[:int(count)]

    rows = {"alignment, 120k-point cloud in view": alignments(in_view),
            "alignment, 120k-point 360-degree cloud": alignments(spinning),
            "temporal fusion + confidence": (fusing(then_fusion, then_temporal),
                                             fusing(now_fusion, sys.modules["space_clip_ros.temporal"])),
            "depth/points_filtered (10 m, flying pixels, 5 cm voxels)": (
                lambda: then_planning.filtered_points(model, fx, fy, cx, cy, 0.3, 10.0, 0.1, 0.05, 1), now_filtered)}
    print(f"CPU, {torch.get_num_threads()} threads, 1242x375, medians of {args.repeats} alternating calls")
    print(f"| step | {args.rev} ms | now ms | now / then |\n|---|---|---|---|")
    for name, (then, now) in rows.items():
        a, b = paired(then, now, args.repeats)
        print(f"| {name} | {a:.2f} | {b:.2f} | {b / a:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
