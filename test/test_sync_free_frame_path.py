"""The node's per-frame path reads nothing on the host and makes no shape from data between the frame's upload and
its one download (issue: one graph per frame on the GPU). Run on the CPU under space_clip_ros.sync_guard.SyncGuard,
which fails on any such op (.item(), nonzero, boolean masks, unique, ...) and counts ops (a proxy for kernel
launches). The static-shape functions give the same numbers as the host-shaped ones they replace."""

import numpy as np
import pytest
import torch
from helpers import node_aligner, node_fusion
from ros_harness import camera_info_msg

from space_clip_ros.alignment import sparse
from space_clip_ros.geometry import capacity_bucket, project_points, project_points_static
from space_clip_ros.node.frame_pipeline import CameraModel, FramePipeline, FrameRequest, download, remember
from space_clip_ros.node.reference import ReferenceCloud
from space_clip_ros.node.settings import NodeSettings
from space_clip_ros.planner_outputs import compact, filtered_points, voxel_downsample, voxel_downsample_static
from space_clip_ros.sync_guard import DataDependentOpError, SyncGuard
from space_clip_ros.synthetic import render_scene

H, W = 96, 320
K4 = (200.0, 200.0, 159.5, 47.5)
EVERYTHING = frozenset({"colored", "points", "scan", "points_filtered", "confidence"})


@pytest.fixture(scope="module")
def pipeline(checkpoint):
    from space_clip_ros import DepthEstimator

    return FramePipeline(DepthEstimator(str(checkpoint), device="cpu", backend="eager"))


def _lidar(depth, share=0.2, seed=0, k=K4):
    """Points of a sparse share of the scene's pixels (intrinsics ``k``), in the camera frame, padded to a capacity
    bucket."""
    fx, fy, cx, cy = k
    rng = np.random.default_rng(seed)
    v, u = np.nonzero((depth > 0) & (rng.random(depth.shape) < share))
    z = depth[v, u]
    points = np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=1).astype(np.float32)
    buffer = np.zeros((capacity_bucket(len(points)), 3), np.float32)
    buffer[:len(points)] = points
    valid = torch.arange(buffer.shape[0]) < len(points)
    return torch.from_numpy(buffer), valid, points


def cloud(buffer, valid, device="cpu"):
    """The reference as the node hands it to the path: point planes and their move (here none), projected there."""
    planes = torch.cat([buffer.T, valid[None].float()]).to(device)
    return ReferenceCloud(planes, torch.eye(4, device=device))


def _frames(scene_rgb, model, aligner, fusion, reference, stamp):
    return [FrameRequest(scene_rgb, (H, W), 1.0, model, EVERYTHING, stamp_ns=stamp, aligner=aligner,
                         reference=reference, fusion=fusion, pose=np.eye(4))]


def test_the_whole_frame_path_between_upload_and_download_is_sync_free(pipeline):
    rgb, depth = render_scene((H, W), K4)
    info = camera_info_msg(None, W, H, *K4)
    model = CameraModel.from_info(info)
    settings = NodeSettings.from_values({"scan_height": 3, "temporal_filter": "odom", "points_rgb": True,
                                         "scan_min_confidence": 0.2, "points_filtered_min_confidence": 0.2})
    aligner, fusion = node_aligner(min_points=10), node_fusion(max_frames=4)
    buffer, valid, _ = _lidar(depth)
    counts = []
    for i in range(4):  # the first frame starts the fusion, the next ones warp and fuse (the 2nd caches rays)
        stamp = (i + 1) * 100_000_000
        with torch.inference_mode():
            with SyncGuard() as guard:  # the frame's upload and the model
                frames = _frames(rgb, model, aligner, fusion, cloud(buffer, valid), stamp)
                raw = pipeline.estimator.predict_tensor([f.rgb for f in frames], [f.size for f in frames], [1.0])
            pipeline.upload(frames, settings)  # what FramePipeline.run uploads before the path
            with SyncGuard() as after:  # everything after the model (the reference's projection too): nothing
                # from the host either
                staged = pipeline.stage(frames, [model], raw, settings)
            remember(frames, [model])
        assert guard.violations == [] and after.violations == [] and guard.transfers == after.transfers == 0
        if i:  # the first frame makes the camera's constants (scan indices, colour table) on the device, once
            assert after.uploads == 0, after.upload_sites
        counts.append(guard.ops + after.ops)
        [host] = download([tensors for tensors, _ in staged])
        assert {"depth", "alignment", "colored", "points", "scan", "points_filtered", "confidence"} <= set(host)
        fit = aligner.resolve(torch.from_numpy(host["alignment"]))
        assert fit.state == "aligned" and fit.points > 100
    assert counts[2] == counts[3] and counts[2] > 200  # the same ops every frame once fusion runs
    print(f"ops per frame (tiny model, every output, alignment, fusion): {counts}")


def test_the_guard_counts_host_values_entering_the_path():
    with SyncGuard() as guard:
        torch.tensor([1, 2, 3])  # made from Python values: an upload on a GPU, and not capturable
        torch.zeros(3) + 1.0  # a fill and a scalar argument: neither
    assert guard.uploads == 1
    assert guard.upload_sites[0].endswith("(test_the_guard_counts_host_values_entering_the_path)")


def test_the_guard_fails_on_host_reads_and_data_dependent_shapes():
    depth = torch.rand(20, 30) * 10
    with pytest.raises(DataDependentOpError, match="reads a value on the host"):
        with SyncGuard():
            filtered_points(depth, 100.0, 100.0, 15.0, 10.0, voxel=0.5)  # reads its count
    with pytest.raises(DataDependentOpError, match="output shape depends on the data"):
        with SyncGuard():
            sparse(depth - 5)  # nonzero
    with pytest.raises(DataDependentOpError, match="boolean-mask indexing"):
        with SyncGuard():
            depth[depth > 5] = 0.0
    with SyncGuard(strict=False) as guard:
        depth[depth > 5].sum()
        torch.unique(depth)
    assert [v["op"].split(".")[1] for v in guard.violations] == ["index", "_unique2"]
    assert guard.violations[0]["where"].endswith("(test_the_guard_fails_on_host_reads_and_data_dependent_shapes)")


def test_static_projection_gives_the_same_pixels_as_the_host_one():
    _, depth = render_scene((H, W), K4)
    buffer, valid, points = _lidar(depth, share=0.5)
    noisy = torch.from_numpy(points.copy())
    noisy[::7, 2] += 0.5  # some points behind others on the same pixel
    buffer[:len(points)] = noisy
    k = np.array([[K4[0], 0, K4[2]], [0, K4[1], K4[3]], [0, 0, 1.0]])
    pixels, values = project_points(noisy, (H, W), k, None, "plumb_bob", 0.1, 80.0)
    with SyncGuard():
        slots, depths = project_points_static(buffer, valid, (H, W), K4, 0.1, 80.0)
    won = depths > 0
    assert int(won.sum()) == len(pixels)
    order = torch.argsort(slots[won])
    torch.testing.assert_close(slots[won][order], pixels)
    torch.testing.assert_close(depths[won][order], values)


def test_static_voxels_and_compaction_equal_the_host_ones():
    rng = np.random.default_rng(2)
    points = torch.from_numpy(rng.uniform(-3, 3, (5000, 3)).astype(np.float32))
    keep = torch.from_numpy(rng.random(5000) < 0.6)
    with SyncGuard():
        buffer, count = voxel_downsample_static(points, keep, 0.5)
        packed, kept = compact(points, keep)
    expected = voxel_downsample(points[keep], 0.5)
    assert int(count) == expected.shape[0]
    torch.testing.assert_close(buffer[:int(count)], expected)
    assert int(kept) == int(keep.sum())
    torch.testing.assert_close(packed[:int(kept)], points[keep])
    assert torch.all(packed[int(kept):] == 0)
    nothing, none = voxel_downsample_static(points, torch.zeros(5000, dtype=torch.bool), 0.5)
    assert int(none) == 0 and torch.isfinite(nothing).all()


def test_one_download_carries_every_output_with_its_dtype_and_shape():
    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64),
               "c": torch.tensor([[1, 2, 3]], dtype=torch.uint8), "_kept_on_device": torch.zeros(3)}
    [host] = download([tensors])
    assert set(host) == {"a", "b", "c"}
    for name in host:
        np.testing.assert_array_equal(host[name], tensors[name].numpy())
        assert host[name].dtype == tensors[name].numpy().dtype


def test_a_filtered_cloud_larger_than_its_buffers_comes_whole_and_the_buffers_grow(pipeline):
    """More kept points than the capacity summed (count -1 on the device), more voxels than the rows downloaded:
    the frame's cloud is still whole (a second pass / transfer that once) and the camera's buffers grow."""
    from space_clip_ros.planner_outputs import filtered_points_static

    rgb, depth = render_scene((H, W), K4)
    model = CameraModel.from_info(camera_info_msg(None, W, H, *K4))
    settings = NodeSettings.from_values({"points_filtered_voxel": 0.02, "points_filtered_max_range": 80.0})
    request = FrameRequest(rgb, (H, W), 1.0, model, frozenset({"points_filtered"}))
    [expected], _ = pipeline.run([request], settings)
    assert len(expected.points_filtered) > 64
    pipeline._kept_capacity[(H, W)], pipeline._filtered_capacity[(H, W)] = 32, 16
    [got], _ = pipeline.run([request], settings)
    np.testing.assert_array_equal(got.points_filtered, expected.points_filtered)
    assert pipeline._kept_capacity[(H, W)] == 64 and pipeline._filtered_capacity[(H, W)] > 16
    depth_t = torch.from_numpy(np.where(depth > 0, depth, np.nan).astype(np.float32))
    kept, count = filtered_points_static(depth_t, *K4, 0.3, 80.0, 0.1, 0.02, 1, capacity=32)
    assert int(count) == -1 and kept.shape == (32, 3)
    kept, count = filtered_points_static(depth_t, *K4, 0.3, 80.0, 0.1, 0.02, 1, capacity=10 ** 6)
    assert int(count) > 0 and kept.shape == (H * W, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/device_check.sh)")
def test_on_cuda_the_path_after_the_model_moves_nothing_between_host_and_device(checkpoint):
    """On a GPU the guard sees every copy: after the model, nothing goes up or down until the one download, and
    the outputs equal the CPU's."""
    from space_clip_ros import DepthEstimator

    rgb, depth = render_scene((H, W), K4)
    model = CameraModel.from_info(camera_info_msg(None, W, H, *K4))
    settings = NodeSettings.from_values({"scan_height": 3, "temporal_filter": "odom", "points_rgb": True})
    buffer, valid, _ = _lidar(depth)
    results = {}
    for device in ("cpu", "cuda"):
        pipeline = FramePipeline(DepthEstimator(str(checkpoint), device=device, precision="fp32", backend="eager"))
        aligner, fusion = node_aligner(min_points=10), node_fusion(max_frames=4)
        for i in range(3):
            stamp = (i + 1) * 100_000_000
            with torch.inference_mode():
                frames = _frames(rgb, model, aligner, fusion, cloud(buffer, valid, device), stamp)
                raw = pipeline.estimator.predict_tensor([rgb], [(H, W)], [1.0])
                pipeline.upload(frames, settings)
                with SyncGuard() as after:
                    staged = pipeline.stage(frames, [model], raw, settings)
                remember(frames, [model])
            if i and device == "cuda":
                assert after.violations == [] and after.transfers == 0 and after.uploads == 0, after.upload_sites
            [host] = download([tensors for tensors, _ in staged])
        results[device] = host
    for name in ("depth", "points", "scan", "confidence"):
        np.testing.assert_allclose(results["cuda"][name].astype(np.float64), results["cpu"][name].astype(np.float64),
                                   rtol=1e-4, atol=1e-4, equal_nan=True, err_msg=name)
    # Colours and the voxel count follow thresholds a last bit of depth can cross: nearly all the same.
    colored = np.abs(results["cuda"]["colored"].astype(np.int16) - results["cpu"]["colored"].astype(np.int16))
    assert (colored > 1).mean() < 1e-3
    count = int(results["cpu"]["points_filtered_count"][0])
    assert abs(int(results["cuda"]["points_filtered_count"][0]) - count) <= max(2, 0.002 * count)
