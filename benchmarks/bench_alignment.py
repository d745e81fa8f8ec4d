"""Scale alignment and temporal fusion: accuracy and cost per frame against the bare forward, in one run.

    python benchmarks/bench_alignment.py [--device cpu] [--repeats 10]

Scene: the synthetic KITTI-geometry street (space_clip_ros.synthetic) at 1242x375 with KITTI's camera; no trained
decoder exists yet, so the "model" depth is the scene's exact depth off by a scale (x 1/1.3) with 5% per-pixel
noise. The reference is a simulated 64-beam lidar (elevations +2..-24.8 degrees, 0.08-degree columns: 288k rays over
360 degrees, of which the ~39k in the camera's view are kept, ranges from the rendered depth) in KITTI's Velodyne
frame (the cost part repeats them into a 120k-point cloud), sent as a
PointCloud2 and taken through the node's path: points parsed, moved through a tf tree (velodyne -> base_link ->
camera), projected, robust scale fit on 80%, accuracy on the 20% held out.

Prints:
  accuracy   median(reference / aligned depth) on the held-out pixels (target: within 1% of 1.0), the fitted
             scale against the true one, clean and with 30% of the lidar points replaced by random ranges (target:
             within 2%)
  fusion     a static camera and a camera driving 0.5 m per frame (poses known), 30 frames, 5% noise per frame:
             temporal std of each pixel's relative error over the last 20 frames, fused / raw (target <= 50%), and
             AbsRel against the exact depth, fused and raw (target: not worse)
  cost       alignment of a 120k-point cloud, fusion + confidence, each per frame on --device, as a share of the
             bare forward of the full-size model (random weights; timing only) in this process (targets: <= 3%,
             <= 5% on a CPU)
"""

import math
import sys
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "test"), str(Path(__file__).resolve().parent)]
import check_io  # noqa: E402

TRUE_SCALE = 1.3


def node_defaults():
    """The node's default parameter values (its table): the aligner and the fusion are measured with them."""
    from space_clip_ros.node.settings import NodeSettings

    return NodeSettings.from_values({})


def lidar_scan(depth, intrinsics, seed=0):
    """(N, 3) points in the camera frame of a 64-beam lidar at the camera's position: the rays inside the rendered
    view (the rest of the circle is left out), ranges from the rendered ``depth``, 1 cm range noise."""
    fx, fy, cx, cy = intrinsics
    height, width = depth.shape
    elevations = np.radians(np.linspace(2.0, -24.8, 64))
    azimuths = np.radians(np.arange(-180, 180, 0.08))  # 4500 columns x 64 beams = 288k rays
    el, az = np.meshgrid(elevations, azimuths, indexing="ij")
    rays = np.stack([np.cos(el) * np.sin(az), -np.sin(el), np.cos(el) * np.cos(az)], axis=-1).reshape(-1, 3)
    front = rays[:, 2] > 1e-3
    rays = rays[front]
    u = np.round(fx * rays[:, 0] / rays[:, 2] + cx).astype(int)
    v = np.round(fy * rays[:, 1] / rays[:, 2] + cy).astype(int)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    rays, u, v = rays[inside], u[inside], v[inside]
    z = depth[v, u]
    hit = z > 0
    points = rays[hit] * (z[hit] / rays[hit, 2])[:, None]  # on the rendered surface along each ray
    rng = np.random.default_rng(seed)
    return points + rng.normal(0, 0.01, points.shape)  # 1 cm range noise


def cloud_message(points, frame, stamp_ns):
    from types import SimpleNamespace

    buffer = np.zeros((points.shape[0], 4), np.float32)  # x, y, z, intensity: point_step 16 as Velodyne drivers
    buffer[:, :3] = points
    fields = [SimpleNamespace(name=c, offset=4 * i, datatype=7, count=1) for i, c in enumerate("xyzi")]
    stamp = SimpleNamespace(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    return SimpleNamespace(header=SimpleNamespace(stamp=stamp, frame_id=frame), fields=fields, height=1,
                           width=points.shape[0], point_step=16, row_step=16 * points.shape[0], is_bigendian=False,
                           data=buffer.tobytes())


def rig():
    """tf: base_link -> velodyne (KITTI's), base_link -> camera optical frame; returns (tree, velodyne <- camera)."""
    from kitti_tree import VELO_R, VELO_T

    from space_clip_ros.tf_tree import TfTree, matrix_quaternion

    camera_from_velo = np.eye(4)
    camera_from_velo[:3, :3], camera_from_velo[:3, 3] = VELO_R, VELO_T
    base_from_velo = np.eye(4)
    base_from_velo[:3, 3] = (0.0, 0.0, 1.73)
    base_from_camera = base_from_velo @ np.linalg.inv(camera_from_velo)
    tree = TfTree()
    for child, m in (("velodyne", base_from_velo), ("camera_optical", base_from_camera)):
        tree.add("base_link", child, 0, m[:3, 3], matrix_quaternion(m[:3, :3]), static=True)
    return tree, np.linalg.inv(camera_from_velo)


def accuracy(depth, intrinsics, outliers, seed=0):
    import torch

    from space_clip_ros.alignment import ScaleAligner, holdout_mask
    from space_clip_ros.node.reference import ReferenceQueue, reference_cloud

    tree, velo_from_camera = rig()
    points = lidar_scan(depth, intrinsics, seed)
    rng = np.random.default_rng(seed + 1)
    if outliers:
        bad = rng.random(points.shape[0]) < outliers
        points[bad] *= rng.uniform(0.2, 3.0, (int(bad.sum()), 1))  # wrong ranges along the same rays
    velo = points @ velo_from_camera[:3, :3].T + velo_from_camera[:3, 3]
    queue = ReferenceQueue("points")
    queue.add(cloud_message(velo, "velodyne", 1_000_000_000))
    pixels, values = reference_cloud(queue, tree, "camera_optical", 1_000_000_000, 50_000_000, "", 0.1).project(
        depth.shape, intrinsics, 0.1, 80.0)  # as the node's path: one row per point, depth 0 where it lost
    nearest = (values > 0).numpy()
    sparse = np.zeros(depth.size, np.float32)
    sparse[pixels.numpy()[nearest]] = values.numpy()[nearest]
    sparse = sparse.reshape(depth.shape)
    noise = 1 + rng.normal(0, 0.05, depth.shape)
    model = torch.from_numpy(np.where(depth > 0, depth / TRUE_SCALE * noise, 100.0).astype(np.float32))
    aligner = ScaleAligner(**{**node_defaults().alignment(), "time_constant_s": 0.0})
    fit = aligner.align(model, torch.from_numpy(sparse), 1_000_000_000)
    pixels = torch.from_numpy(np.flatnonzero((sparse >= 0.1) & (sparse <= 80.0)))
    held = pixels[holdout_mask(pixels, 0.2, 1_000_000_000)].numpy()
    ratio = float(np.median(sparse.ravel()[held] / model.numpy().ravel()[held]))
    return fit, ratio, points.shape[0], int((sparse > 0).sum())


def noisy_sequence(frames, step, noise, seed=0):
    from space_clip_ros.synthetic import KITTI_K, render_scene

    rng = np.random.default_rng(seed)
    for i in range(frames):
        _, depth = render_scene(intrinsics=KITTI_K, forward=i * step)
        noisy = np.where(depth > 0, depth * (1 + rng.normal(0, noise, depth.shape)), np.nan).astype(np.float32)
        pose = np.eye(4)
        pose[2, 3] = i * step
        yield depth, noisy, pose


def fusion_quality(step, device, frames=30, warmup=10):
    import torch

    from space_clip_ros.synthetic import KITTI_K
    from space_clip_ros.temporal import TemporalFusion

    fusion = TemporalFusion(**node_defaults().fusion())
    raw_err, fused_err, truths = [], [], []
    for i, (truth, noisy, pose) in enumerate(noisy_sequence(frames, step, 0.05)):
        depth = torch.from_numpy(noisy.copy()).to(device)
        fusion.fuse(depth, KITTI_K, pose, (i + 1) * 100_000_000)
        if i >= warmup:
            with np.errstate(invalid="ignore", divide="ignore"):
                raw_err.append(noisy / truth - 1)
                fused_err.append(depth.cpu().numpy() / truth - 1)
            truths.append(truth)
    raw_err, fused_err = np.stack(raw_err), np.stack(fused_err)
    # Pixels with depth in every frame, up to 40 m (the street's far end changes while driving).
    keep = np.all(np.stack(truths) > 0, axis=0) & np.all(np.stack(truths) < 40, axis=0)
    raw_std = float(np.nanmedian(np.nanstd(raw_err[:, keep], axis=0)))
    fused_std = float(np.nanmedian(np.nanstd(fused_err[:, keep], axis=0)))
    raw_abs, fused_abs = (float(np.nanmean(np.abs(e[:, keep]))) for e in (raw_err, fused_err))
    return raw_std, fused_std, raw_abs, fused_abs


def main() -> int:
    parser = check_io.parser_for(__doc__, repeats=10)
    parser.add_argument("--backend", default="auto")
    args = check_io.parse(parser)

    import torch
    from bench_inference import full_size_model
    from bench_node import median_ms

    from space_clip_ros import DepthEstimator
    from space_clip_ros.alignment import ScaleAligner
    from space_clip_ros.node.reference import ReferenceQueue, reference_cloud
    from space_clip_ros.sync_guard import count_ops
    from space_clip_ros.synthetic import KITTI_K, render_scene
    from space_clip_ros.temporal import TemporalFusion, confidence

    rgb, depth = render_scene(intrinsics=KITTI_K)
    height, width = depth.shape
    if args.dry_run:
        lidar = lidar_scan(depth, KITTI_K)
        rig()
        return check_io.dry_run_done(args, f"alignment ({lidar.shape[0]:,} lidar points in view, a 120k cloud) "
                                     f"and fusion accuracy and cost on {args.device} ({args.backend})")
    print(f"scene: synthetic KITTI street {width}x{height}; model depth = exact / {TRUE_SCALE} x (1 + 5% noise)")
    print("\n| accuracy | lidar points | reference pixels | fitted scale | x true | held-out median(ref / aligned) |")
    print("|---|---|---|---|---|---|")
    for outliers in (0.0, 0.3):
        fit, ratio, n, pixels = accuracy(depth, KITTI_K, outliers)
        print(f"| {int(outliers * 100)}% outliers | {n:,} | {pixels:,} | {fit.fitted:.4f} | "
              f"{fit.fitted / TRUE_SCALE:.4f} | {ratio:.4f} |")

    print("\n| fusion, 30 frames, 5% noise | temporal std raw | fused | fused / raw | AbsRel raw | AbsRel fused |")
    print("|---|---|---|---|---|---|")
    for name, step in (("static camera", 0.0), ("driving 0.5 m/frame", 0.5)):
        raw_std, fused_std, raw_abs, fused_abs = fusion_quality(step, args.device)
        print(f"| {name} | {raw_std:.4f} | {fused_std:.4f} | {fused_std / raw_std:.3f} | {raw_abs:.4f} | "
              f"{fused_abs:.4f} |")

    device = torch.device(args.device)
    tree, velo_from_camera = rig()
    points = lidar_scan(depth, KITTI_K)
    big = np.concatenate([points] * math.ceil(120_000 / points.shape[0]))[:120_000]  # a 120k-point cloud in view
    spinning = np.concatenate([big[:60_000], big[:60_000] * np.array([-1.0, 1.0, -1.0], np.float32)])  # half behind
    model = torch.from_numpy(np.where(depth > 0, depth / TRUE_SCALE, 100.0).astype(np.float32)).to(device)
    aligner = ScaleAligner(**node_defaults().alignment())

    def aligning(cloud):
        queue = ReferenceQueue("points")
        queue.add(cloud_message(cloud @ velo_from_camera[:3, :3].T + velo_from_camera[:3, 3], "velodyne",
                                1_000_000_000))

        def align_on_device():  # as the node: fixed-capacity buffer, projection and fit on the device
            pairs = reference_cloud(queue, tree, "camera_optical", 1_000_000_000, 50_000_000, "", 0.1,
                                    device).project((height, width), KITTI_K, 0.1, 80.0)
            return aligner.align_static(model.clone(), pairs, 1_000_000_000)
        return align_on_device, lambda: align_on_device().cpu()  # the numbers come down with the frame's download

    align_on_device, align = aligning(big)
    spinning_on_device, align_spinning = aligning(spinning)

    fusion = TemporalFusion(**node_defaults().fusion())
    pose = np.eye(4)
    counter = [0]

    def fuse_on_device():
        counter[0] += 1
        current = model.clone()
        temporal = fusion.fuse(current, KITTI_K, pose, counter[0])
        return confidence(current, temporal, 0.1)

    def fuse():
        fuse_on_device().cpu()

    # First the steps, then the forward: a runtime's worker threads may still spin after it.
    costs = {"alignment, 120k-point cloud in view (parse, tf, project, fit)": median_ms(align, args.repeats),
             "alignment, 120k-point 360-degree cloud (half behind the camera)": median_ms(align_spinning,
                                                                                         args.repeats),
             "temporal fusion + confidence": median_ms(fuse, args.repeats)}
    ops = dict(zip(costs, (count_ops(align_on_device), count_ops(spinning_on_device),
                           count_ops(lambda: fuse_on_device())), strict=True))
    estimator = DepthEstimator(full_size_model(), device=args.device, backend=args.backend)
    forward_ms = median_ms(lambda: estimator.predict_tensor([rgb], [(height, width)], [1.0])[0].cpu(),
                            max(3, args.repeats // 2))
    estimator = None
    print(f"\nper-frame cost on {device}, {width}x{height}, median of {max(5, args.repeats)}")
    print("| step | ms | x forward | ops | data-dependent ops |")
    print("|---|---|---|---|---|")
    print(f"| forward, 1 frame (bare, {args.backend}) | {forward_ms:.1f} | 1.000 | | |")
    for name, ms in costs.items():
        print(f"| {name} | {ms:.2f} | {ms / forward_ms:.4f} | {ops[name]['ops']} | {ops[name]['data_dependent']} |")
    align_ms, _, fuse_ms = costs.values()
    check_io.write(args, f"alignment {align_ms:.2f} ms ({align_ms / forward_ms:.2f}x forward), fusion + confidence "
                   f"{fuse_ms:.2f} ms ({fuse_ms / forward_ms:.2f}x) on {args.device}",
                   forward_ms=forward_ms, costs_ms=costs, ops=ops)
    return 0


if __name__ == "__main__":
    sys.exit(main())
