"""Planner outputs (space_clip_ros.planner_outputs) against independent references: the LaserScan against a line-by-line
numpy port of depthimage_to_laserscan (ros-perception, ros2 branch: convert_msg, convert<float>, use_point, with
image_geometry's rectifyPoint / projectPixelTo3dRay), the voxel grid against a dictionary of voxels, the flying-pixel
filter on a synthetic step; the CUDA path equal to the CPU path where a GPU is present."""

import math

import numpy as np
import pytest
import torch
from oracles import depth_to_points

from space_clip_ros.planner_outputs import (
    edge_mask,
    filtered_points,
    laser_scan,
    scan_frame_id,
    scan_geometry,
    scan_rows,
    voxel_downsample,
)
from space_clip_ros.synthetic import KITTI_K

K_KITTI = KITTI_K


def _k_p(fx, fy, cx, cy, tx=0.0):
    return [fx, 0, cx, 0, fy, cy, 0, 0, 1], [fx, 0, cx, tx, 0, fy, cy, 0, 0, 0, 1, 0]


# ---------------------------------------------------------------------------- the reference: depthimage_to_laserscan
def _rectify_point(uv, k, d, r, p):
    """image_geometry::PinholeCameraModel::rectifyPoint (plumb_bob): unchanged without distortion, else
    cv::undistortPoints on float32 points with K, D, R, P."""
    if not np.any(d):
        return uv
    import cv2

    raw = np.array([[uv]], dtype=np.float32)
    rect = cv2.undistortPoints(raw, np.reshape(k, (3, 3)), np.asarray(d, np.float64), R=np.reshape(r, (3, 3)),
                               P=np.reshape(p, (3, 4)))
    return float(rect[0, 0, 0]), float(rect[0, 0, 1])


def _use_point(new, old, range_min, range_max):
    new_finite, old_finite = math.isfinite(new), math.isfinite(old)
    if not new_finite and not old_finite:
        return not math.isnan(new)
    if not (range_min <= new <= range_max):
        return False
    if not old_finite:
        return True
    return new < old


def reference_scan(depth, k, p, scan_height, range_min, range_max, d=(0, 0, 0, 0, 0), r=(1, 0, 0, 0, 1, 0, 0, 0, 1)):
    """(angle_min, angle_max, angle_increment, ranges) exactly as depthimage_to_laserscan computes them for a 32FC1
    image, one pixel at a time in its order, with C++'s float / double arithmetic."""
    height, width = depth.shape
    f32 = np.float32
    fx, fy, cx, cy, tx, ty = p[0], p[5], p[2], p[6], p[3], p[7]

    def ray(uv):
        return np.array([(uv[0] - cx - tx) / fx, (uv[1] - cy - ty) / fy, 1.0])

    def between(a, b):
        return math.acos(np.dot(a, b) / (math.sqrt(np.dot(a, a)) * math.sqrt(np.dot(b, b))))

    left = ray(_rectify_point((0.0, cy), k, d, r, p))
    right = ray(_rectify_point((width - 1.0, cy), k, d, r, p))
    centre = ray(_rectify_point((cx, cy), k, d, r, p))
    angle_max, angle_min = f32(between(left, centre)), f32(-between(centre, right))
    increment = f32(f32(angle_max - angle_min) / f32(width - 1))
    if scan_height / 2.0 > cy or scan_height / 2.0 > height - cy:
        raise RuntimeError(f"scan_height ( {scan_height} pixels) is too large for the image height.")
    ranges = [float("nan")] * width
    center_x, constant_x = f32(cx), f32(1.0 / fx)
    offset = int(cy - scan_height / 2.0)
    for v in range(offset, offset + scan_height):
        for u in range(width):
            value = f32(depth[v, u])
            rng = float(value)
            th = -math.atan2(float(f32(f32(u) - center_x)) * float(constant_x), 1.0)
            index = int((th - float(angle_min)) / float(increment))
            if math.isfinite(value):
                x = float(f32(f32(f32(f32(u) - center_x) * value) * constant_x))
                z = float(value)
                rng = math.sqrt(x ** 2 + z ** 2)
            if not 0 <= index < width:  # C++ would write outside the vector; the port skips it
                continue
            rng = float(f32(rng))
            if _use_point(rng, ranges[index], float(f32(range_min)), float(f32(range_max))):
                ranges[index] = rng
    return float(angle_min), float(angle_max), float(increment), np.array(ranges, dtype=np.float32)


def _scan(depth, k, p, scan_height, range_min, range_max, d=(), r=None, device="cpu"):
    geometry = scan_geometry(depth.shape[1], depth.shape[0], k, p, scan_height, d, r)
    rows = torch.from_numpy(depth[geometry.first_row:geometry.first_row + geometry.rows]).to(device)
    return geometry, laser_scan(rows, geometry, range_min, range_max).cpu().numpy()


def _test_depth(seed, shape=(48, 160)):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.05, 30.0, shape).astype(np.float32)
    holes = rng.random(shape)
    depth[holes < 0.1] = np.nan
    depth[(holes >= 0.1) & (holes < 0.15)] = np.inf
    depth[(holes >= 0.15) & (holes < 0.17)] = -np.inf
    return depth


@pytest.mark.parametrize("scan_height", [1, 2, 5, 11])
@pytest.mark.parametrize("seed", [0, 1])
def test_scan_equals_depthimage_to_laserscan(scan_height, seed):
    depth = _test_depth(seed)
    k, p = _k_p(100.0, 110.0, 80.3, 24.6)
    geometry, ranges = _scan(depth, k, p, scan_height, 0.3, 20.0)
    angle_min, angle_max, increment, expected = reference_scan(depth, k, p, scan_height, 0.3, 20.0)
    assert (geometry.angle_min, geometry.angle_max, geometry.angle_increment) == (angle_min, angle_max, increment)
    np.testing.assert_array_equal(np.isnan(ranges), np.isnan(expected))
    np.testing.assert_allclose(ranges, expected, rtol=1e-6, equal_nan=True)
    assert np.isfinite(expected).sum() > 50  # the cases the test is about occur
    if scan_height == 1:
        assert np.isinf(expected).any() and np.isnan(expected).any()


def test_scan_nan_inf_ties_and_edges_by_hand():
    """NaN only -> NaN; +Inf beats NaN; a range in limits beats Inf; out-of-limit ranges are skipped; the closest
    of several rows wins. Column u is angle index width - 1 - u (the scan turns counter-clockwise, the image's
    columns go right)."""
    width, height = 5, 3
    k, p = _k_p(1000.0, 1000.0, 2.0, 1.0)  # a long focal length: range = depth within 2e-6
    depth = np.full((height, width), np.nan, np.float32)
    depth[1] = [np.nan, np.inf, 5.0, 25.0, 0.1]
    geometry, ranges = _scan(depth, k, p, 1, 0.3, 20.0)
    assert geometry.first_row == 0 and geometry.rows == 1  # int(cy - 0.5) = int(0.5) = 0: row 0, as upstream
    depth[0] = depth[1]
    geometry, ranges = _scan(depth, k, p, 1, 0.3, 20.0)
    _, _, _, expected = reference_scan(depth, k, p, 1, 0.3, 20.0)
    np.testing.assert_array_equal(ranges, expected)
    ranges = ranges[::-1]  # back in column order
    assert np.isnan(ranges[0]) and ranges[1] == np.inf and ranges[2] == pytest.approx(5.0)
    assert np.isnan(ranges[3]) and np.isnan(ranges[4])  # beyond range_max, below range_min: no return
    # Several rows (cy 2: rows 1 and 2) and depthimage_to_laserscan's truncated indices: columns 3 and 4 share
    # index 0, index 1 gets no column.
    k, p = _k_p(1000.0, 1000.0, 2.0, 2.0)
    depth = np.full((4, width), 7.0, np.float32)
    depth[1] = [np.inf, 3.0, 7.0, np.nan, 2.0]
    depth[2] = [2.5, np.inf, 7.0, np.inf, 40.0]
    geometry, ranges = _scan(depth, k, p, 2, 0.3, 20.0)
    assert geometry.index.tolist() == [4, 3, 2, 0, 0] and geometry.first_row == 1
    np.testing.assert_allclose(ranges, [2.0, np.nan, 7.0, 3.0, 2.5], rtol=1e-5)
    np.testing.assert_array_equal(ranges, reference_scan(depth, k, p, 2, 0.3, 20.0)[3])


def test_scan_with_distortion_and_a_stereo_baseline_equals_the_reference():
    depth = _test_depth(3)
    k, p = _k_p(100.0, 100.0, 81.0, 23.5, tx=-5.0)
    p[2], p[6] = 79.0, 24.2  # rectified principal point differs from the raw one
    d = (-0.2, 0.05, 0.001, -0.002, 0.0)
    r = (0.9998, -0.01, 0.0, 0.01, 0.9998, 0.0, 0.0, 0.0, 1.0)
    geometry, ranges = _scan(depth, k, p, 3, 0.3, 20.0, d, r)
    angle_min, angle_max, increment, expected = reference_scan(depth, k, p, 3, 0.3, 20.0, d, r)
    assert geometry.angle_min == pytest.approx(angle_min, abs=1e-6)
    assert geometry.angle_max == pytest.approx(angle_max, abs=1e-6)
    np.testing.assert_allclose(ranges, expected, rtol=1e-6, equal_nan=True)


def test_scan_height_too_large_fails_as_upstream():
    k, p = _k_p(100.0, 100.0, 80.0, 10.0)
    with pytest.raises(ValueError, match=r"scan_height \( 21 pixels\) is too large for the image height"):
        scan_geometry(160, 48, k, p, 21)
    with pytest.raises(RuntimeError, match="too large"):
        reference_scan(np.ones((48, 160), np.float32), k, p, 21, 0.3, 20.0)
    scan_geometry(160, 48, k, p, 20)  # 10 rows above cy fit
    with pytest.raises(ValueError, match="scan_height must be >= 1"):
        scan_geometry(160, 48, k, p, 0)


def test_scan_rows_make_far_depth_infinite_and_near_depth_unknown():
    k, p = _k_p(*K_KITTI)
    geometry = scan_geometry(1242, 375, k, p, 3)
    depth = torch.full((375, 1242), 10.0)
    depth[geometry.first_row, :10] = 95.0
    depth[geometry.first_row + 1, :5] = 0.05
    rows = scan_rows(depth, geometry, 0.1, 80.0)
    assert rows.shape == (3, 1242) and torch.isinf(rows[0, :10]).all() and torch.isnan(rows[1, :5]).all()
    ranges = laser_scan(rows, geometry, 0.3, 20.0)
    assert torch.isfinite(ranges).sum() > 1000


def test_scan_frame_drops_the_optical_suffix():
    assert scan_frame_id("camera_color_optical_frame") == "camera_color"
    assert scan_frame_id("cam_optical") == "cam"
    assert scan_frame_id("base_camera") == "base_camera"
    assert scan_frame_id("_optical") == "_optical"
    assert scan_frame_id("cam_optical", "laser") == "laser"


# ---------------------------------------------------------------------------- filtered cloud
def reference_voxel_grid(points, leaf):
    """Voxel (floor(p / leaf) per axis) -> centroid, with a dictionary."""
    voxels = {}
    for point, key in zip(points.astype(np.float64), np.floor(points / np.float32(leaf)).astype(np.int64), strict=True):
        voxels.setdefault(tuple(key), []).append(point)
    return {key: np.mean(members, axis=0) for key, members in voxels.items()}


@pytest.mark.parametrize("leaf", [0.05, 0.3, 1.0])
def test_voxel_grid_equals_a_dictionary_of_voxels(leaf):
    rng = np.random.default_rng(7)
    points = np.concatenate([rng.uniform(-3, 3, (4000, 3)), rng.uniform(-0.1, 0.1, (500, 3)) + [1.0, 0.5, 2.0]])
    points = points.astype(np.float32)
    expected = reference_voxel_grid(points, leaf)
    got = voxel_downsample(torch.from_numpy(points), leaf).numpy()
    assert got.shape == (len(expected), 3)
    keys = np.floor(got / np.float32(leaf)).astype(np.int64)  # a centroid lies in its own voxel
    for key, centroid in zip(map(tuple, keys), got, strict=True):
        np.testing.assert_allclose(centroid, expected[key], rtol=1e-5, atol=1e-6)
    assert voxel_downsample(torch.from_numpy(points), 0.0).shape == points.shape


def test_edge_mask_marks_both_sides_of_a_step_and_nothing_on_a_slope():
    depth = torch.full((6, 8), 5.0)
    depth[:, 4:] = 10.0  # a step of 5 m at column 4
    flying = edge_mask(depth, 0.1)
    assert flying[:, 3].all() and flying[:, 4].all() and flying.sum() == 12
    assert not edge_mask(depth, 1.5).any()  # 5 / 5 = 100% < 150%: kept
    slope = torch.linspace(5.0, 6.0, 8).repeat(6, 1)  # 0.14 m per column, under 10% of 5 m
    assert not edge_mask(slope, 0.1).any()
    holes = depth.clone()
    holes[:, 3] = float("nan")  # a neighbour without depth is no jump
    assert not edge_mask(holes, 0.1)[:, 4].any()
    assert not edge_mask(depth, 0.0).any()


def test_filtered_points_equal_the_numpy_cloud_filtered():
    rng = np.random.default_rng(3)
    depth = rng.uniform(1.0, 12.0, (40, 60)).astype(np.float32)
    depth[5:15, 10:30] = 3.0
    depth[rng.random(depth.shape) < 0.05] = np.nan
    fx, fy, cx, cy = 50.0, 55.0, 30.2, 19.7
    for stride, threshold, leaf in [(1, 0.0, 0.0), (2, 0.1, 0.0), (1, 0.1, 0.25), (3, 0.05, 0.5)]:
        flying = edge_mask(torch.from_numpy(depth), threshold).numpy()
        cloud = depth_to_points(np.where(flying, np.nan, depth), fx, fy, cx, cy, stride).reshape(-1, 3)
        cloud = cloud[np.isfinite(cloud).all(axis=1)]
        distance = np.linalg.norm(cloud, axis=1)
        cloud = cloud[(distance >= 2.0) & (distance <= 10.0)]
        got = filtered_points(torch.from_numpy(depth), fx, fy, cx, cy, 2.0, 10.0, threshold, leaf, stride).numpy()
        if leaf == 0:
            np.testing.assert_allclose(got, cloud, rtol=1e-6)
        else:
            expected = reference_voxel_grid(cloud, leaf)
            assert len(got) == len(expected) < len(cloud)
            for point in got:
                key = tuple(np.floor(point / np.float32(leaf)).astype(np.int64))
                np.testing.assert_allclose(point, expected[key], rtol=1e-5)


def test_filtered_points_errors():
    with pytest.raises(ValueError, match="fx > 0"):
        filtered_points(torch.ones(4, 4), 0.0, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        filtered_points(torch.ones(4, 4), 1.0, 1.0, 0.0, 0.0, stride=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_and_cpu_paths_are_equal():
    from space_clip_ros.synthetic import render_scene

    _, depth = render_scene()
    depth = np.where(depth > 0, depth, np.nan).astype(np.float32)
    fx, fy, cx, cy = K_KITTI
    k, p = _k_p(fx, fy, cx, cy)
    for scan_height in (1, 9):
        _, cpu = _scan(depth, k, p, scan_height, 0.3, 20.0)
        _, gpu = _scan(depth, k, p, scan_height, 0.3, 20.0, device="cuda")
        np.testing.assert_array_equal(cpu, gpu)
    args = (fx, fy, cx, cy, 0.3, 10.0, 0.1, 0.05)
    cpu = filtered_points(torch.from_numpy(depth), *args).numpy()
    gpu = filtered_points(torch.from_numpy(depth).cuda(), *args).cpu().numpy()
    assert cpu.shape == gpu.shape
    np.testing.assert_allclose(gpu, cpu, rtol=1e-5, atol=1e-6)
