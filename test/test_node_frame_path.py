"""The depth node's frame path without DDS: per-camera state (latest-frame slot, stamp order, camera_info pairing,
delivery estimate), intake (decode and check a frame), the frame pipeline (model + every output as arrays), the
outgoing messages and runtime parameter changes. The node over DDS: test_depth_node.py."""

import threading
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import node_aligner, node_fusion

from space_clip_ros.node.camera_state import (
    DELIVERY_WAIT_S,
    STAMP_RESET_NS,
    CameraState,
    LatestSlot,
    StampOrder,
)
from space_clip_ros.node.settings import NodeSettings, apply_changes
from space_clip_ros.planner_outputs import filtered_points, laser_scan, scan_geometry, scan_rows


def _stamp(ns):
    return SimpleNamespace(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _msg(ns):
    return SimpleNamespace(header=SimpleNamespace(stamp=_stamp(ns)))


def test_stamp_order_rejects_disorder_and_takes_a_long_jump_back_as_a_restart():
    order = StampOrder()
    assert order.check(10) == "accept"
    order.processed(10_000_000_000)
    assert order.check(10_000_000_000) == "accept"  # the same stamp again is not disorder
    assert order.check(9_000_000_000) == "reject"
    assert order.check(10_000_000_000 - STAMP_RESET_NS - 1) == "reset"
    order.forget()
    assert order.check(1) == "accept"


def test_latest_slot_keeps_the_newest_frame_per_camera_and_counts_the_replaced():
    slot, a, b = LatestSlot(), CameraState("a", 5), CameraState("b", 5)
    slot.start()
    slot.put(a, "a1")
    slot.put(a, "a2")
    slot.put(b, "b1")
    assert slot.take([a, b]) == [(a, "a2"), (b, "b1")]
    assert a.stats.counts()["dropped"] == 1 and "dropped" not in b.stats.counts()
    got = []
    worker = threading.Thread(target=lambda: got.append(slot.take([a, b], timeout=0.05)))
    worker.start()
    slot.put(b, "b2")  # wakes the waiting worker
    worker.join(5)
    assert got == [[(b, "b2")]]
    slot.stop()
    assert slot.take([a, b]) is None and not slot.running


def test_camera_info_pairs_by_stamp_else_the_latest():
    camera = CameraState("", cache=2)
    assert camera.pair_info(_stamp(5)) == (None, True)
    infos = [_msg(n) for n in (1, 2, 3)]
    for info in infos:
        camera.saw_info(info, 0.0)
    assert camera.pair_info(_stamp(2)) == (infos[1], True)
    assert camera.pair_info(_stamp(1)) == (infos[2], False)  # evicted (cache 2): the latest, flagged
    camera.resize_cache(1)
    assert list(camera.infos) == [infos[2]]
    assert camera.topic("depth/image") == "depth/image" and CameraState("front", 1).topic("image") == "front/image"


def test_delivery_estimate_counts_images_whose_camera_info_came_alone():
    camera = CameraState("", 10)
    for n in range(5):
        camera.saw_info(_msg(n), now=0.0)
    for n in range(3):
        camera.delivery.saw_image(n)
    camera.delivery.settle(DELIVERY_WAIT_S / 2)
    assert camera.delivery.values() == {"image_delivery": "n/a (needs camera_info)"}
    camera.delivery.settle(DELIVERY_WAIT_S)
    assert camera.delivery.values() == {"image_delivery": "0.60", "images_missing": "2"}


def test_apply_changes_refuses_with_the_reason_and_applies_valid_values():
    current = NodeSettings.from_values({})
    updated, reason = apply_changes(current, {}, {"scan_height": 3, "points_filtered_voxel": 0.1}, active=True)
    assert reason is None and updated.scan_height == 3 and updated.points_filtered_voxel == 0.1
    assert apply_changes(current, {}, {"scan_height": 0}, active=True) == (
        None, "scan_height must be >= 1 (depth/scan (LaserScan as depthimage_to_laserscan): rows around cy), got 0")
    _, reason = apply_changes(current, {}, {"device": "cuda"}, active=False)
    assert "needs the model loaded again" in reason
    assert apply_changes(None, {}, {"device": "cuda"}, active=False) == (None, None)  # read at configure
    assert apply_changes(current, {}, {"device": current.device}, active=True)[1] is None  # unchanged: fine


# ---------------------------------------------------------------------------- intake, pipeline, outgoing messages
sensor_msgs = pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs not installed: pip install -e '.[ros]'")

from ros_harness import camera_info_msg, rgb_image_msg  # noqa: E402

from space_clip_ros.node.frame_pipeline import CameraModel, FramePipeline, FrameRequest  # noqa: E402
from space_clip_ros.node.intake import Rejected, take_frame  # noqa: E402
from space_clip_ros.ros.output_messages import output_messages  # noqa: E402

W, H = 160, 48
ALL = {"colored": 1, "points": 1, "scan": 1, "points_filtered": 1}


@pytest.fixture(scope="module")
def pipeline(checkpoint):
    from space_clip_ros import DepthEstimator

    return FramePipeline(DepthEstimator(str(checkpoint), device="cpu", backend="eager"))


def _frame(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _stamp_msg(i):
    from builtin_interfaces.msg import Time

    return Time(sec=1_700_000_000 + i)


def test_intake_decodes_checks_and_asks_for_what_is_subscribed(pipeline):
    settings = NodeSettings.from_values({"publish_colored": False})
    camera = CameraState("", 5)
    stamp = _stamp_msg(1)
    camera.saw_info(camera_info_msg(stamp, W, H, fx=100.0), 0.0)
    intake = take_frame(settings, camera, rgb_image_msg(_frame(), stamp), pipeline.estimator, ALL)
    assert intake.request.wants == {"points", "scan", "points_filtered"}  # colour is switched off
    assert intake.request.size == (H, W) and intake.request.model.intrinsics[0] == 100.0
    assert intake.request.scale == pytest.approx(pipeline.estimator.focal_scale(100.0, W))
    with pytest.raises(Rejected) as error:  # the same camera going back in time
        take_frame(settings, camera, rgb_image_msg(_frame(), _stamp_msg(0)), pipeline.estimator, ALL)
    assert (error.value.kind, error.value.reason) == ("image", "stamp_backwards")
    camera.saw_info(camera_info_msg(_stamp_msg(2), W * 2, H, fx=100.0), 0.0)
    with pytest.raises(Rejected) as error:
        take_frame(settings, camera, rgb_image_msg(_frame(), _stamp_msg(2)), pipeline.estimator, {})
    assert (error.value.kind, error.value.reason) == ("camera_info", "info_size_mismatch")


def test_pipeline_returns_every_output_equal_to_its_function(pipeline):
    settings = NodeSettings.from_values({"scan_height": 3, "points_filtered_voxel": 0.2})
    info = camera_info_msg(_stamp_msg(3), W, H, fx=100.0, fy=110.0, cx=80.0, cy=24.0)
    model = CameraModel.from_info(info)
    rgb = _frame(3)
    request = FrameRequest(rgb, (H, W), 1.0, model, frozenset(ALL))
    [result], inference_ms = pipeline.run([request], settings)
    assert inference_ms > 0 and not result.problems
    raw = pipeline.estimator.predict_tensor([rgb], [(H, W)], [1.0])[0]
    expected = raw.clone().masked_fill_((raw < 0.1) | (raw > 80.0), float("nan"))
    np.testing.assert_allclose(result.depth, expected.numpy(), rtol=1e-5, equal_nan=True)
    geometry = scan_geometry(W, H, info.k, info.p, 3)
    ranges = laser_scan(scan_rows(raw, geometry, 0.1, 80.0), geometry, 0.3, 20.0)
    np.testing.assert_allclose(result.scan, ranges.numpy(), rtol=1e-5, equal_nan=True)
    kept = filtered_points(expected, 100.0, 110.0, 80.0, 24.0, 0.3, 10.0, 0.1, 0.2)
    np.testing.assert_allclose(result.points_filtered, kept.numpy(), rtol=1e-5)
    assert result.points.shape == (H, W, 4) and result.colored.shape == (H, W, 3)
    header = SimpleNamespace(stamp=_stamp_msg(3), frame_id="front_camera_optical_frame")
    out = output_messages(result, header, info, settings, scan_time=0.1)
    assert set(out) == {"depth", "info", "colored", "points", "points_filtered", "scan"}
    scan = out["scan"]
    assert scan.header.frame_id == "front_camera" and scan.scan_time == pytest.approx(0.1)
    assert (scan.range_min, scan.range_max) == (pytest.approx(0.3), pytest.approx(20.0))
    assert len(scan.ranges) == W and scan.angle_min < 0 < scan.angle_max
    cloud = out["points_filtered"]
    assert (cloud.height, cloud.width, cloud.point_step, cloud.is_dense) == (1, len(kept), 12, True)
    assert [f.name for f in cloud.fields] == ["x", "y", "z"]
    np.testing.assert_array_equal(np.frombuffer(cloud.data, np.float32).reshape(-1, 3), result.points_filtered)


def test_pipeline_without_camera_info_or_with_a_scan_too_tall(pipeline):
    settings = NodeSettings.from_values({"scan_height": 40})
    [bare], _ = pipeline.run([FrameRequest(_frame(4), (H, W), 1.0, None, frozenset(ALL))], settings)
    assert bare.points is None and bare.scan is None and bare.colored is not None
    assert bare.problems == {"points": "no camera_info", "scan": "no camera_info",
                             "points_filtered": "no camera_info"}
    model = CameraModel.from_info(camera_info_msg(_stamp_msg(5), W, H, fx=100.0, cy=24.0))
    [tall], _ = pipeline.run([FrameRequest(_frame(5), (H // 2, W // 2), 1.0, model, frozenset({"scan"}))], settings)
    assert tall.scan is None and "too large for the image height" in tall.problems["scan"]
    assert tall.model.width == W // 2 and tall.model.intrinsics[3] == pytest.approx(12.0)


def test_pipeline_aligns_fuses_and_drops_untrusted_pixels(pipeline):
    """With an aligner and fusion: every output comes from the aligned depth; depth/confidence is the flying-pixel
    test times the temporal term; scan_min_confidence / points_filtered_min_confidence drop untrusted pixels."""
    from space_clip_ros.planner_outputs import edge_mask

    info = camera_info_msg(_stamp_msg(6), W, H, fx=100.0, fy=100.0, cx=80.0, cy=24.0)
    model = CameraModel.from_info(info)
    rgb = _frame(6)
    raw = pipeline.estimator.predict_tensor([rgb], [(H, W)], [1.0])[0]
    reference = np.where(np.arange(H * W).reshape(H, W) % 3 == 0, raw.numpy() * 2.0, 0.0).astype(np.float32)
    wants = frozenset({"scan", "points_filtered", "confidence"})
    aligner, fusion = node_aligner(min_points=10, time_constant_s=0.0), node_fusion(max_frames=4)
    results = []
    for i, (threshold, edge) in enumerate(((0.0, 0.1), (0.0, 0.1), (0.6, 0.1))):
        settings = NodeSettings.from_values({"scan_min_confidence": threshold, "points_filtered_edge_threshold": edge,
                                             "points_filtered_min_confidence": threshold, "temporal_filter": "odom",
                                             "points_filtered_voxel": 0.0})
        request = FrameRequest(rgb, (H, W), 1.0, model, wants, stamp_ns=(i + 1) * 100_000_000, aligner=aligner,
                               reference=reference, fusion=fusion, pose=np.eye(4))
        [result], _ = pipeline.run([request], settings)
        results.append(result)
    aligned = raw * 2.0
    expected = aligned.clone().masked_fill_((aligned < 0.1) | (aligned > 80.0), float("nan"))
    for result in results:  # the same frame again: fusion keeps the depth, alignment doubles it
        assert result.alignment.fitted == pytest.approx(2.0, rel=1e-5) and result.alignment.state == "aligned"
        np.testing.assert_allclose(result.depth, expected.numpy(), rtol=1e-5, equal_nan=True)
    flying = edge_mask(aligned, 0.1).numpy()
    valid = np.isfinite(expected.numpy()) & ~flying
    for n, result in enumerate(results, 1):  # n agreeing frames of at most 4
        np.testing.assert_allclose(result.confidence[valid], n / 4)
        assert np.all(result.confidence[~valid] == 0)
    loose, strict = results[1], results[2]  # 3/4 >= 0.6: every pixel stays but the flying ones, dropped anyway
    assert len(strict.points_filtered) == len(loose.points_filtered)
    settings = NodeSettings.from_values({"points_filtered_min_confidence": 0.9, "scan_min_confidence": 0.9,
                                         "temporal_filter": "odom", "points_filtered_voxel": 0.0})
    request = FrameRequest(rgb, (H, W), 1.0, model, wants, stamp_ns=400_000_000, aligner=aligner,
                           reference=reference, fusion=fusion, pose=np.eye(4))
    [trusted], _ = pipeline.run([request], settings)  # 4/4 = 1.0: flying pixels (0) go, the rest stays
    kept = filtered_points(expected, 100.0, 100.0, 80.0, 24.0, 0.3, 10.0, 0.1, 0.0)
    np.testing.assert_allclose(trusted.points_filtered, kept.numpy(), rtol=1e-5)
    request.stamp_ns, request.pose = 500_000_000, None  # no pose: history restarts at 1/4 < 0.9: nothing trusted
    [untrusted], _ = pipeline.run([request], settings)
    assert len(untrusted.points_filtered) == 0 and np.isnan(untrusted.scan).all()
    assert np.isfinite(trusted.scan).any()


def test_without_tf2_msgs_the_node_says_how_to_get_it(monkeypatch):
    import sys

    from space_clip_ros.ros.tf_listener import subscribe_tf
    from space_clip_ros.tf_tree import TfTree

    monkeypatch.setitem(sys.modules, "tf2_msgs.msg", None)  # as if the package were not installed
    subs, problem = subscribe_tf(None, TfTree())
    assert subs == [] and "tf2_msgs is not installed" in problem and "ROS tf2_msgs wheel" in problem
