"""Scale alignment, temporal fusion and confidence without ROS (space_clip_ros.alignment, .temporal) and the
reference path of the node (node/reference.py: a lidar cloud through a tf chain, an RGB-D image, broken clouds)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import node_aligner, node_fusion
from oracles import depth_to_points

from space_clip_ros.alignment import (
    MIN_LOG_BAND,
    OUTLIER_MADS,
    ScaleTracker,
    holdout_mask,
    masked_mean,
    robust_log_scale,
    robust_log_scale_static,
)
from space_clip_ros.geometry import project_to_depth
from space_clip_ros.node.range_data import cloud_points
from space_clip_ros.node.reference import ReferenceQueue, ReferenceRefused, check_cloud, reference_cloud
from space_clip_ros.synthetic import render_scene
from space_clip_ros.temporal import confidence, warp_depth
from space_clip_ros.tf_tree import TfTree, matrix_quaternion

H, W = 120, 400
K4 = (240.0, 240.0, 199.5, 59.5)  # fx, fy, cx, cy
K = np.array([[K4[0], 0, K4[2]], [0, K4[1], K4[3]], [0, 0, 1.0]])


@pytest.fixture(scope="module")
def scene():
    _, depth = render_scene((H, W), K4)
    return depth  # metres, 0 = none (sky)


def _reference(queue, tree, stamp, max_dt_ns, odom_frame=""):
    """The camera's reference at ``stamp`` as the node's path makes it (points uploaded, moved and projected with
    a z-buffer), as an (H, W) depth image, 0 = none."""
    pixels, depths = reference_cloud(queue, tree, "camera_optical", stamp, max_dt_ns, odom_frame, 0.1).project(
        (H, W), K4, 0.1, 80.0)
    keep = (depths > 0).numpy()  # rows that are no pixel's nearest point have depth 0
    out = np.zeros(H * W, np.float32)
    out[pixels.numpy()[keep]] = depths.numpy()[keep]
    return out.reshape(H, W)


def _sparse_reference(depth, share=0.3, seed=0):
    rng = np.random.default_rng(seed)
    keep = (depth > 0) & (rng.random(depth.shape) < share)
    return np.where(keep, depth, 0.0).astype(np.float32)


def test_holdout_is_a_stable_share_that_changes_per_frame():
    pixels = torch.arange(200_000)
    a, b = holdout_mask(pixels, 0.2, 1_700_000_000_000), holdout_mask(pixels, 0.2, 1_700_000_000_100)
    assert 0.19 < a.float().mean() < 0.21 and 0.19 < b.float().mean() < 0.21
    assert torch.equal(a, holdout_mask(pixels, 0.2, 1_700_000_000_000))  # the same frame: the same pixels
    assert (a != b).float().mean() > 0.2  # another frame: others
    assert not holdout_mask(pixels, 0.0, 5).any()


def test_robust_scale_with_30_percent_outliers():
    rng = np.random.default_rng(1)
    n = 20_000
    log_ratio = np.log(1.37) + rng.normal(0, 0.03, n)
    bad = rng.random(n) < 0.3  # 30% outliers: any depth from 1 to 80 m instead of the true one
    log_ratio[bad] = np.log(rng.uniform(1, 80, bad.sum()) / rng.uniform(1, 80, bad.sum()))
    log_scale, inliers = robust_log_scale(torch.from_numpy(log_ratio))
    assert math.exp(log_scale) == pytest.approx(1.37, rel=0.02)
    assert abs(math.exp(float(np.median(log_ratio))) / 1.37 - 1) > abs(math.exp(log_scale) / 1.37 - 1)
    assert 0.6 < inliers.float().mean() < 0.8


def _robust_by_three_sorts(log_ratio, valid):
    """The robust fit as written first: a sort of the masked values for every median (the median, then each
    band's median deviation), boolean indexing allowed (a test oracle)."""
    def lower_median(values):
        return torch.sort(values).values[(values.numel() - 1) // 2] if values.numel() else torch.tensor(math.nan)

    center = lower_median(log_ratio[valid])
    inliers = valid
    for _ in range(2):
        deviation = (log_ratio - center).abs()
        mad = lower_median(deviation[inliers]).to(log_ratio.dtype) * 1.4826
        inliers = valid & (deviation <= torch.clamp(mad * OUTLIER_MADS, min=MIN_LOG_BAND))
        center = masked_mean(log_ratio, inliers)
    return center, inliers


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_one_sort_robust_fit_equals_three_sorts_exactly(dtype):
    """The node's fit sorts once and finds each band's median deviation in that order: the same bits as sorting
    the deviations, over odd and even counts, ties, heavy outliers, a band that holds one side only, one value
    and none."""
    rng = np.random.default_rng(7)
    cases = []
    for n in (1, 2, 3, 10, 11, 1000, 4097):
        values = np.log(1.3) + rng.normal(0, 0.05, n)
        bad = rng.random(n) < 0.35
        values[bad] = rng.uniform(-3, 3, bad.sum())
        cases.append((values, rng.random(n) < 0.8))
    ties = np.round(rng.normal(0, 0.02, 999), 2)  # many equal values
    cases += [(ties, np.ones(999, bool)), (ties, rng.random(999) < 0.5)]
    skewed = np.concatenate([np.zeros(60), np.full(40, 0.5)])  # the band around the median holds one side only
    cases += [(skewed, np.ones(100, bool)), (np.zeros(50), np.zeros(50, bool)), (np.full(7, 0.25), np.ones(7, bool))]
    for values, valid in cases:
        log_ratio, mask = torch.from_numpy(values).to(dtype), torch.from_numpy(valid)
        center, inliers = robust_log_scale_static(log_ratio, mask)
        want_center, want_inliers = _robust_by_three_sorts(log_ratio, mask)
        assert torch.equal(inliers, want_inliers), (len(values), int(mask.sum()))
        if math.isnan(float(want_center)):
            assert math.isnan(float(center)) and not inliers.any()
        else:
            assert center.item() == want_center.item(), (len(values), int(mask.sum()))


def test_aligner_fixes_the_scale_and_measures_on_held_out_pixels(scene):
    truth = torch.from_numpy(scene).float()
    model = torch.where(truth > 0, truth / 1.6, torch.full_like(truth, 30.0))  # 1.6x too near; sky at 30 m
    reference = torch.from_numpy(_sparse_reference(scene))
    aligner = node_aligner(holdout=0.2, min_points=50, time_constant_s=0.0)
    depth = model.clone()
    fit = aligner.align(depth, reference, 1_000_000_000)
    assert fit.state == "aligned" and fit.fitted == pytest.approx(1.6, rel=1e-3) and fit.applied == fit.fitted
    torch.testing.assert_close(depth, model * fit.applied)  # every pixel scaled, in place
    used = int((reference > 0).sum())
    assert fit.points + fit.held_out == used and fit.held_out == pytest.approx(0.2 * used, rel=0.1)
    assert fit.abs_rel_before == pytest.approx(1 - 1 / 1.6, rel=1e-3) and fit.abs_rel_after < 1e-3
    assert fit.delta1_after == 1.0 and fit.inlier_fraction == 1.0
    values = fit.values()
    assert values["scale"] == "1.6000" and values["scale_state"] == "aligned"


def test_aligner_too_few_points_holds_then_drops_the_scale(scene):
    truth = torch.from_numpy(scene).float()
    aligner = node_aligner(min_points=50, time_constant_s=0.0, hold_s=2.0)
    aligner.align(truth / 2, torch.from_numpy(_sparse_reference(scene)), 1_000_000_000)
    few = torch.zeros_like(truth)
    few[60, 100:110] = truth[60, 100:110]
    depth = truth / 2
    fit = aligner.align(depth, few, 2_000_000_000)
    assert fit.state == "holding" and fit.applied == pytest.approx(2.0) and "fewer than scale_min_points" in fit.reason
    torch.testing.assert_close(depth, truth)
    fit = aligner.align(truth / 2, None, 2_900_000_000, "reference_none: no reference message received yet")
    assert fit.state == "holding"
    fit = aligner.align(truth / 2, None, 3_100_000_000, "reference_old: ...")  # 2.1 s after the last fit
    assert fit.state == "unaligned" and fit.applied == 1.0 and fit.values()["scale_reason"] == "reference_old: ..."


def test_tracker_filters_with_its_time_constant():
    tracker = ScaleTracker(time_constant_s=1.0, hold_s=5.0)
    assert tracker.update(0, math.log(2.0)) == (pytest.approx(2.0), "aligned")
    scale, _ = tracker.update(1_000_000_000, math.log(4.0))  # one time constant later: 63% of the way in log
    assert math.log(scale) == pytest.approx(math.log(2) + (1 - math.exp(-1)) * math.log(2))
    scale, _ = tracker.update(500_000_000, math.log(8.0))  # time went back: start over
    assert scale == pytest.approx(8.0)


def test_warp_depth_moves_a_plane_with_the_camera():
    plane = torch.full((H, W), 10.0, dtype=torch.float64)
    motion = torch.eye(4, dtype=torch.float64)
    motion[2, 3] = -2.0  # the camera moved 2 m forward: the plane is 2 m nearer
    depth, weight = warp_depth(plane, torch.full_like(plane, 3.0), K4, motion, K4, (H, W))
    assert torch.allclose(depth, torch.full_like(depth, 8.0)) and (weight == 3.0).all()  # magnified: no holes
    motion[2, 3] = 2.0  # 2 m back: the plane shrinks to the middle 10/12 of the image
    depth, _ = warp_depth(plane, torch.ones_like(plane), K4, motion, K4, (H, W))
    inner = depth[15:105, 40:360]
    assert torch.allclose(inner, torch.full_like(inner, 12.0))
    assert (depth[:5, :] == 0).all() and (depth[:, :25] == 0).all()  # the borders came into view: nothing there


def test_warp_keeps_the_nearest_point():
    depth = torch.full((H, W), 20.0, dtype=torch.float64)
    depth[:, 200:] = 10.0  # a near wall on the right half
    motion = torch.eye(4, dtype=torch.float64)
    motion[0, 3] = -1.0  # camera moves right by 1 m: points shift left in the image
    warped, _ = warp_depth(depth, torch.ones_like(depth), K4, motion, K4, (H, W))
    assert warped[60, 190].item() == pytest.approx(10.0)  # the near wall covers the far one where both land


def _noisy_sequence(scene, frames, noise, seed=0, step=0.5):
    """(depth frames, poses) of a camera moving forward along the street, with multiplicative noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(frames):
        _, depth = render_scene((H, W), K4, forward=i * step)
        noisy = np.where(depth > 0, depth * (1 + rng.normal(0, noise, depth.shape)), np.nan).astype(np.float32)
        pose = np.eye(4)
        pose[2, 3] = i * step
        out.append((depth, noisy, pose))
    return out


def test_fusion_on_a_moving_camera_halves_the_noise_and_keeps_the_depth(scene):
    fusion = node_fusion(gate=0.15, max_frames=8)
    raw_err, fused_err = [], []
    for i, (truth, noisy, pose) in enumerate(_noisy_sequence(scene, 14, 0.05)):
        depth = torch.from_numpy(noisy.copy()).double()
        term = fusion.fuse(depth, K4, pose, 1_000_000_000 + i * 100_000_000)
        if i >= 6:
            valid = (truth > 0) & (truth < 40)
            raw_err.append(np.abs(noisy[valid] / truth[valid] - 1).mean())
            fused_err.append(np.nanmean(np.abs(depth.numpy()[valid] / truth[valid] - 1)))
            assert float(term[torch.from_numpy(valid)].mean()) > 0.5  # most pixels agree over several frames
    assert np.mean(fused_err) < 0.6 * np.mean(raw_err)


def test_fusion_restarts_where_the_scene_changes_and_without_a_pose(scene):
    fusion = node_fusion(gate=0.15, max_frames=8)
    pose = np.eye(4)
    base = torch.from_numpy(np.where(scene > 0, scene, np.nan)).double()
    for i in range(5):
        fusion.fuse(base.clone(), K4, pose, i)
    moved = base.clone()
    moved[40:80, 150:250] = 3.0  # someone walks in front of the camera
    term = fusion.fuse(moved, K4, pose, 5)
    assert torch.allclose(moved[40:80, 150:250], torch.full((40, 100), 3.0, dtype=torch.float64))  # not blended
    assert float(term[40:80, 150:250].max()) == pytest.approx(1 / 8)
    assert float(term[100:110, 0:50].min()) > 0.7
    term = fusion.fuse(base.clone(), K4, None, 6)  # no pose: the history starts over
    assert float(term[torch.isfinite(base)].max()) == pytest.approx(1 / 8)


def test_confidence_zero_at_edges_and_without_depth():
    depth = torch.full((20, 20), 5.0)
    depth[:, 10:] = 10.0
    depth[0, 0] = float("nan")
    conf = confidence(depth, None, 0.1)
    assert conf[5, 9] == 0 and conf[5, 10] == 0 and conf[5, 3] == 1 and conf[0, 0] == 0
    assert conf[5, 15] == 1
    half = confidence(depth, torch.full((20, 20), 0.5), 0.0)
    assert half[5, 9] == 0.5


# ---------------------------------------------------------------------------- the reference path (ROS-free)
def _cloud_msg(points, frame, ns, point_step=16):
    """A PointCloud2-shaped object (x, y, z float32 and padding), as rclpy and rosbags deliver them."""
    n = points.shape[0]
    buffer = np.zeros((n, point_step // 4), np.float32)
    buffer[:, :3] = points
    fields = [SimpleNamespace(name=c, offset=4 * i, datatype=7, count=1) for i, c in enumerate("xyz")]
    stamp = SimpleNamespace(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
    return SimpleNamespace(header=SimpleNamespace(stamp=stamp, frame_id=frame), fields=fields, height=1, width=n,
                           point_step=point_step, row_step=point_step * n, is_bigendian=False,
                           data=buffer.tobytes())


def _rotation_z(angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _lidar_rig():
    """base_link -> lidar (1.2 m up, yawed 10 degrees) and base_link -> camera optical frame (KITTI's axes)."""
    tree = TfTree()
    lidar = np.eye(4)
    lidar[:3, :3], lidar[:3, 3] = _rotation_z(math.radians(10)), (0.3, 0.05, 1.2)
    camera = np.eye(4)
    camera[:3, :3] = np.array([[0, 0, 1.0], [-1, 0, 0], [0, -1, 0]])  # optical: z forward, x right, y down
    camera[:3, 3] = (0.5, 0.0, 1.0)
    for child, m in (("lidar", lidar), ("camera_optical", camera)):
        tree.add("base_link", child, 0, m[:3, 3], matrix_quaternion(m[:3, :3]), static=True)
    return tree, lidar, camera


def test_lidar_reference_through_a_tf_chain_equals_the_direct_projection(scene):
    tree, lidar, camera = _lidar_rig()
    points_cam = depth_to_points(scene, *K4, stride=3).reshape(-1, 3)
    points_cam = points_cam[np.isfinite(points_cam).all(axis=1)]
    lidar_from_camera = np.linalg.inv(lidar) @ camera
    points_lidar = points_cam @ lidar_from_camera[:3, :3].T + lidar_from_camera[:3, 3]
    queue = ReferenceQueue("points")
    queue.add(_cloud_msg(points_lidar, "lidar", 5_000_000_000))
    sparse = _reference(queue, tree, 5_020_000_000, 50_000_000, "odom")
    expected = project_to_depth(points_cam, (H, W), K, None, "plumb_bob", 0.1, 80.0)
    np.testing.assert_allclose(sparse, expected, atol=1e-4)
    assert (sparse > 0).sum() > 2000


def test_cloud_points_drops_points_with_a_nan_or_inf_coordinate_in_any_layout():
    points = np.arange(30, dtype=np.float32).reshape(10, 3)
    points[2, 0], points[5, 2], points[7, 1] = np.nan, np.inf, -np.inf
    kept = np.delete(points, [2, 5, 7], axis=0)
    np.testing.assert_array_equal(cloud_points(_cloud_msg(points, "lidar", 1), np.float32), kept)
    finite = _cloud_msg(kept, "lidar", 1)
    np.testing.assert_array_equal(cloud_points(finite), kept.astype(np.float64))
    # z, y, x as float64 in a 32-byte point: the general path
    wide = np.zeros((10, 4), np.float64)
    wide[:, 0], wide[:, 1], wide[:, 2] = points[:, 2], points[:, 1], points[:, 0]
    msg = _cloud_msg(np.zeros((10, 3), np.float32), "lidar", 1, point_step=32)
    msg.fields = [SimpleNamespace(name=c, offset=8 * i, datatype=8, count=1) for i, c in enumerate("zyx")]
    msg.data = wide.tobytes()
    np.testing.assert_array_equal(cloud_points(msg, np.float32), kept)


def test_reference_pairing_and_refusals(scene):
    tree, _, _ = _lidar_rig()
    queue = ReferenceQueue("points")
    with pytest.raises(ReferenceRefused) as none:
        queue.nearest(5_000_000_000, 50_000_000)
    assert none.value.reason == "reference_none"
    queue.add(_cloud_msg(np.ones((10, 3), np.float32), "lidar", 5_000_000_000))
    with pytest.raises(ReferenceRefused) as old:
        queue.nearest(5_200_000_000, 50_000_000)
    assert old.value.reason == "reference_old" and "0.200 s older" in str(old.value)
    with pytest.raises(ReferenceRefused) as future:
        queue.nearest(4_800_000_000, 50_000_000)
    assert future.value.reason == "reference_future"
    nan_cloud = _cloud_msg(np.full((50, 3), np.nan, np.float32), "lidar", 6_000_000_000)
    queue.add(nan_cloud)  # all-NaN clouds pass the cheap checks and are refused when used
    with pytest.raises(ReferenceRefused) as nan:
        _reference(queue, tree, 6_000_000_000, 50_000_000)
    assert nan.value.reason == "reference_empty"
    empty = _cloud_msg(np.zeros((0, 3), np.float32), "lidar", 1)
    huge = _cloud_msg(np.zeros((1, 3), np.float32), "lidar", 1)
    huge.width = 5_000_000
    short = _cloud_msg(np.zeros((10, 3), np.float32), "lidar", 1)
    short.data = short.data[:50]
    no_z = _cloud_msg(np.zeros((10, 3), np.float32), "lidar", 1)
    no_z.fields = no_z.fields[:2]
    for msg, reason in ((empty, "reference_empty"), (huge, "reference_too_large"), (short, "reference_malformed"),
                        (no_z, "reference_malformed")):
        with pytest.raises(ReferenceRefused) as refused:
            check_cloud(msg)
        assert refused.value.reason == reason
    queue.add(_cloud_msg(np.ones((10, 3), np.float32), "elsewhere", 7_000_000_000))
    with pytest.raises(ReferenceRefused) as no_tf:
        _reference(queue, tree, 7_000_000_000, 50_000_000)
    assert no_tf.value.reason == "reference_no_tf" and "no tf path" in str(no_tf.value)


def test_rgbd_reference_from_another_viewpoint(scene):
    """A depth camera 10 cm to the left of the colour camera: its depth image, back-projected and moved, lands on
    the colour camera's depth within a few percent (pixel resampling)."""
    tree = TfTree()
    tree.add("camera_optical", "depth_optical", 0, (-0.1, 0.0, 0.0), (0, 0, 0, 1), static=True)
    _, depth_view = render_scene((H, W), (K4[0], K4[1], K4[2] + 0.1 * K4[0] / 10, K4[3]))
    _, seen = render_scene((H, W), K4)
    # The depth camera's own image: the scene rendered 0.1 m to the left (a shifted principal point is close
    # enough at the distances of interest for this check's tolerance); 16UC1 millimetres.
    millimetres = np.round(np.where(depth_view > 0, depth_view, 0) * 1000).astype(np.uint16)
    ns = 3_000_000_000
    stamp = SimpleNamespace(sec=3, nanosec=0)
    image = SimpleNamespace(header=SimpleNamespace(stamp=stamp, frame_id="depth_optical"), encoding="16UC1",
                            height=H, width=W, step=2 * W, is_bigendian=0, data=millimetres.tobytes())
    info = SimpleNamespace(header=SimpleNamespace(stamp=stamp, frame_id="depth_optical"), k=K.ravel().tolist(),
                           d=[0.0] * 5)
    queue = ReferenceQueue("depth")
    queue.add(image)
    with pytest.raises(ReferenceRefused) as no_info:
        _reference(queue, tree, ns, 50_000_000)
    assert no_info.value.reason == "reference_no_camera_info"
    queue.add_info(info)
    sparse = _reference(queue, tree, ns, 50_000_000)
    both = (sparse > 0) & (seen > 0) & (seen < 30)
    assert both.sum() > 0.5 * (seen > 0).sum()
    assert np.median(np.abs(sparse[both] / seen[both] - 1)) < 0.02


def test_moving_robot_reference_goes_through_the_odom_frame():
    """The lidar's scan of 0.05 s before the image, taken while the robot drove 1 m/s forward: through odom it lands
    where the camera sees the points at the image's time (5 cm nearer), not where the lidar saw them."""
    tree = TfTree()
    tree.add("base_link", "camera_optical", 0, (0, 0, 0), (-0.5, 0.5, -0.5, 0.5), static=True)  # z fwd
    tree.add("base_link", "lidar", 0, (0, 0, 0), (0, 0, 0, 1), static=True)
    for t in range(0, 11):
        tree.add("odom", "base_link", t * 100_000_000, (0.1 * t, 0, 0), (0, 0, 0, 1))
    wall = np.stack([np.full(400, 10.0), np.linspace(-2, 2, 400), np.zeros(400)], axis=1)  # 10 m ahead (x)
    queue = ReferenceQueue("points")
    queue.add(_cloud_msg(wall.astype(np.float32), "lidar", 500_000_000))
    sparse = _reference(queue, tree, 550_000_000, 100_000_000, "odom")
    assert np.median(sparse[sparse > 0]) == pytest.approx(9.95, abs=1e-4)
    static_path = _reference(queue, tree, 550_000_000, 100_000_000)
    assert np.median(static_path[static_path > 0]) == pytest.approx(10.0, abs=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_alignment_and_fusion_on_cuda_match_the_cpu(scene):
    """The node runs both on the model's device: the same fit, scale, fused depth and confidence as on the CPU."""
    truth = torch.from_numpy(scene).float()
    model = torch.where(truth > 0, truth / 1.6, torch.full_like(truth, 30.0))
    reference = torch.from_numpy(_sparse_reference(scene))
    fits, fused = {}, {}
    for device in ("cpu", "cuda"):
        aligner = node_aligner(time_constant_s=0.0)
        depth = model.clone().to(device)
        fits[device] = aligner.align(depth, reference, 1_000_000_000)
        fusion = node_fusion()
        outs = []
        for i, (_, noisy, pose) in enumerate(_noisy_sequence(scene, 4, 0.05, step=0.5)):
            current = torch.from_numpy(noisy.copy()).to(device)
            term = fusion.fuse(current, K4, pose, i + 1)
            outs.append((current.cpu(), confidence(current, term, 0.1).cpu()))
        fused[device] = outs
    assert fits["cuda"].fitted == pytest.approx(fits["cpu"].fitted, rel=1e-5)
    assert fits["cuda"].abs_rel_after == pytest.approx(fits["cpu"].abs_rel_after, abs=1e-5)
    for (cpu_depth, cpu_conf), (gpu_depth, gpu_conf) in zip(fused["cpu"], fused["cuda"], strict=True):
        close = torch.isclose(cpu_depth, gpu_depth, rtol=1e-4, equal_nan=True)
        assert close.float().mean() > 0.999  # a z-buffer tie may go either way on a handful of pixels
        assert (cpu_conf == gpu_conf).float().mean() > 0.999
