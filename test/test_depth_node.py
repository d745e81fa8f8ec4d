"""depth_node over real DDS: the node runs in its own process; this process publishes frames and reads the outputs."""

import collections
import importlib.util
import signal
import time

import numpy as np
import pytest
import torch

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed: pip install -e '.[ros]'")

from oracles import depth_to_points  # noqa: E402
from ros_harness import Harness, camera_info_msg, rgb_image_msg, start_node  # noqa: E402

from space_clip_ros import DepthEstimator, load_checkpoint  # noqa: E402
from space_clip_ros.inference import choose_backend  # noqa: E402
from space_clip_ros.node import decoding  # noqa: E402

W, H = 160, 48  # a small KITTI-shaped frame keeps CPU inference fast


def _has(module):
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def reference(checkpoint):
    # Eager fp32: the node runs backend auto (openvino where installed), cam_b onnxruntime; both must match it.
    return DepthEstimator(load_checkpoint(checkpoint), device="cpu", backend="eager")


def _frame(seed):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


class Node:
    """A depth_node process and a harness in its namespace."""

    def __init__(self, ros, tmp_path, namespace, params):
        self.log = tmp_path / f"{namespace.strip('/')}.log"
        self.proc = start_node(ros, namespace, params, self.log)
        self.h = Harness(namespace)

    def stop(self, sig=signal.SIGINT):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except Exception:
                self.proc.kill()
                raise
        self.h.destroy()
        return self.proc.returncode


@pytest.fixture(scope="module")
def node(ros, checkpoint, tmp_path_factory):
    n = Node(ros, tmp_path_factory.mktemp("node"), "/cam_a",
             {"checkpoint": str(checkpoint), "device": "cpu", "max_depth": 80.0, "min_depth": 0.1})
    try:
        n.h.subscribe_outputs()
        n.h.wait_for_node()
        yield n
    finally:  # also when the set-up fails: no node process outlives the tests
        n.stop()


def _send(h, i, rgb=None, info=True, **kwargs):
    stamp = h.stamp(i)
    rgb = _frame(i) if rgb is None else rgb
    if info:
        h.info_pub.publish(camera_info_msg(stamp, rgb.shape[1], rgb.shape[0], **kwargs))
    h.image_pub.publish(rgb_image_msg(rgb, stamp))
    return stamp, rgb


def _depth_for(h, stamp, timeout=60.0):
    def find():
        return [m for m in h.received["depth"] if m.header.stamp == stamp]
    h.spin_until(lambda: find(), timeout, f"depth for stamp {stamp.sec}")
    return find()[0]


def _expected_depth(reference, rgb, fx, size=None):
    depth = reference(rgb, fx=fx, output_size=size)
    depth[(depth < 0.1) | (depth > 80.0)] = np.nan
    return depth


def test_every_output_for_a_good_frame(node, reference):
    h = node.h
    fx = 100.0
    stamp, rgb = _send(h, 1, fx=fx, fy=110.0, cx=80.0, cy=24.0)
    depth_msg = _depth_for(h, stamp)
    assert depth_msg.encoding == "32FC1" and (depth_msg.width, depth_msg.height) == (W, H)
    assert depth_msg.header.frame_id == "cam_optical" and depth_msg.step == W * 4
    depth = decoding.image_to_depth(depth_msg)
    np.testing.assert_allclose(depth, _expected_depth(reference, rgb, fx), rtol=1e-4, equal_nan=True)
    h.spin_until(lambda: any(m.header.stamp == stamp for m in h.received["points"]), 30, "the cloud")
    h.spin_until(lambda: any(m.header.stamp == stamp for m in h.received["colored"]), 30, "the coloured image")
    h.spin_until(lambda: any(m.header.stamp == stamp for m in h.received["info"]), 30, "depth/camera_info")
    info = next(m for m in h.received["info"] if m.header.stamp == stamp)
    assert (info.width, info.height) == (W, H) and list(info.k) == pytest.approx([fx, 0, 80, 0, 110, 24, 0, 0, 1])
    cloud = next(m for m in h.received["points"] if m.header.stamp == stamp)
    assert (cloud.height, cloud.width, cloud.point_step, cloud.is_dense) == (H, W, 16, False)
    assert [(f.name, f.offset, f.datatype) for f in cloud.fields] == [("x", 0, 7), ("y", 4, 7), ("z", 8, 7)]
    xyz = decoding.cloud_to_array(cloud)[..., :3]
    np.testing.assert_allclose(xyz, depth_to_points(depth, fx, 110.0, 80.0, 24.0), rtol=1e-6, equal_nan=True)
    v, u = 40, 150  # spot check one point by hand
    z = depth[v, u]
    np.testing.assert_allclose(xyz[v, u], [(u - 80.0) * z / fx, (v - 24.0) * z / 110.0, z], rtol=1e-5)
    colored = next(m for m in h.received["colored"] if m.header.stamp == stamp)
    assert colored.encoding == "rgb8" and (colored.width, colored.height) == (W, H)


def test_focal_length_scale_transfer_uses_camera_info(node, reference):
    h = node.h
    rgb = _frame(2)
    a = decoding.image_to_depth(_depth_for(h, _send(h, 2, rgb, fx=100.0)[0]))
    b = decoding.image_to_depth(_depth_for(h, _send(h, 3, rgb, fx=200.0)[0]))
    finite = np.isfinite(a) & np.isfinite(b)
    assert finite.mean() > 0.5
    np.testing.assert_allclose(b[finite], 2 * a[finite], rtol=1e-4)


def test_encodings_and_step_padding_give_the_same_depth(node):
    h = node.h
    rgb = _frame(5)
    base = None
    for i, (encoding, pad) in enumerate([("rgb8", 0), ("rgb8", 7), ("bgr8", 3), ("rgba8", 0)]):
        stamp = h.stamp(100 + i)
        h.info_pub.publish(camera_info_msg(stamp, W, H, fx=100.0))
        h.image_pub.publish(rgb_image_msg(rgb, stamp, encoding=encoding, pad=pad))
        depth = decoding.image_to_depth(_depth_for(h, stamp))
        if base is None:
            base = depth
        np.testing.assert_allclose(depth, base, rtol=1e-5, equal_nan=True, err_msg=f"{encoding} pad {pad}")
    mono_stamp = h.stamp(110)
    h.info_pub.publish(camera_info_msg(mono_stamp, W, H, fx=100.0))
    h.image_pub.publish(rgb_image_msg(rgb, mono_stamp, encoding="mono8"))
    assert decoding.image_to_depth(_depth_for(h, mono_stamp)).shape == (H, W)


def _bad_inputs(h):
    """(kind, reason, message fragment, publish function) for each malformed raw input the node must reject, each
    with its own stamp (index 400 + 2k; the good frame after it gets 401 + 2k)."""
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import Image

    def image(i, **fields):
        def publish():
            stamp = h.stamp(i)
            h.info_pub.publish(camera_info_msg(stamp, W, H))
            good = rgb_image_msg(_frame(i), stamp)
            msg = Image(header=good.header, height=fields.get("height", good.height),
                        width=fields.get("width", good.width), encoding=fields.get("encoding", good.encoding),
                        is_bigendian=fields.get("is_bigendian", 0), step=fields.get("step", good.step))
            msg.data = fields.get("data", bytes(good.data))
            h.image_pub.publish(msg)
        return publish

    def info(i, **kwargs):
        def publish():
            stamp = h.stamp(i)
            h.info_pub.publish(camera_info_msg(stamp, kwargs.pop("width", W), kwargs.pop("height", H), **kwargs))
            h.image_pub.publish(rgb_image_msg(_frame(i), stamp))
        return publish

    def older(i):
        def publish():  # half a second before the good frame just processed (401 + 2(k - 1)): out of order
            last = h.stamp(i - 1)
            stamp = Time(sec=last.sec - 1, nanosec=last.nanosec + 500_000_000)
            h.info_pub.publish(camera_info_msg(stamp, W, H))
            h.image_pub.publish(rgb_image_msg(_frame(i), stamp))
        return publish

    nan_pixels = np.full((H, W, 3), 0.5, np.float32)
    nan_pixels[3, 4, 1] = np.nan
    inf_pixels = np.full((H, W, 3), 0.5, np.float32)
    inf_pixels[5, 6, 0] = np.inf
    cases = [
        ("image", "unknown_encoding", "unknown encoding 'rgb9'", dict(encoding="rgb9")),
        ("image", "empty_encoding", "empty encoding", dict(encoding="")),
        ("image", "unsupported_encoding", "unsupported encoding 'yuv422'", dict(encoding="yuv422")),
        ("image", "unsupported_encoding", "unsupported encoding 'bayer_rggb8'", dict(encoding="bayer_rggb8")),
        ("image", "empty_image", "zero-size image", dict(height=0, width=0, step=0, data=b"")),
        ("image", "data_too_short", "data holds", dict(data=b"\x00" * (W * 3 * H - 5))),
        ("image", "step_too_small", "step 10 is shorter", dict(step=10)),
        ("image", "image_too_large", "100000x100000", dict(height=100000, width=100000, step=300000,
                                                            data=b"\x00" * 1000)),
        ("image", "image_too_small", "1x1 image", dict(height=1, width=1, step=3, data=b"\x00" * 3)),
        ("image", "non_finite_pixels", "NaN or infinite", dict(encoding="32FC3", step=W * 12,
                                                               data=nan_pixels.tobytes())),
        ("image", "non_finite_pixels", "NaN or infinite", dict(encoding="32FC3", step=W * 12,
                                                               data=inf_pixels.tobytes())),
        ("image", "misaligned_data", "whole 2-byte values", dict(encoding="mono16", step=W * 2,
                                                                  data=b"\x00" * (W * 2 * H + 1))),
        ("image", "invalid_is_bigendian", "is_bigendian is 2", dict(is_bigendian=2)),
        ("camera_info", "info_zero_focal", "zero", dict(fx=0.0)),
        ("camera_info", "info_non_finite_focal", "not finite", dict(fx=float("nan"))),
        ("camera_info", "info_negative_focal", "negative", dict(fx=-721.5, fy=-721.5)),
        ("camera_info", "info_size_mismatch", "camera_info is 320x96 but the image is 160x48",
         dict(width=320, height=96)),
        ("image", "stamp_backwards", "older than the last processed frame", None),
    ]
    out = []
    for k, (kind, reason, fragment, fields) in enumerate(cases):
        i = 400 + 2 * k
        publish = older(i) if fields is None else image(i, **fields) if kind == "image" else info(i, **fields)
        out.append((kind, reason, fragment, publish))
    return out


def test_bad_inputs_are_rejected_by_reason_counted_and_the_next_good_frame_works(node):
    """Each malformed input is rejected with its named reason, counted under rejected.<reason> in diagnostics, and
    the good frame after it is processed; the node keeps running."""
    h = node.h
    before = h.fresh_status(lambda s: True)
    start = int(before["rejected_total"])
    bad = _bad_inputs(h)
    assert len({(reason, fragment) for _, reason, fragment, _ in bad}) >= 16
    expected = collections.Counter()
    for n, (kind, reason, fragment, publish) in enumerate(bad, start=1):
        publish()
        expected[reason] += 1
        status = h.fresh_status(lambda s, n=n: int(s["rejected_total"]) >= start + n, 20, f"rejection for {reason}")
        assert status["last_rejection"].startswith(kind) and fragment in status["last_rejection"], (reason, status)
        assert int(status[f"rejected.{reason}"]) - int(before.get(f"rejected.{reason}", 0)) == expected[reason]
        stamp, _ = _send(h, 400 + 2 * (n - 1) + 1, fx=100.0)
        _depth_for(h, stamp)
    assert node.proc.poll() is None
    status = h.status()
    assert int(status["rejected_total"]) - start == len(bad)
    assert int(status["rejected_camera_info"]) - int(before["rejected_camera_info"]) == 4
    assert status["level"] == 1  # WARN while inputs are being rejected
    log = node.log.read_text()
    assert "rejected image (unsupported_encoding): unsupported encoding 'yuv422'" in log


def test_diagnostics_report_rates_latency_and_device(node):
    h = node.h
    for i in range(450, 454):  # stamps no earlier test sent: each wait needs a new output
        _depth_for(h, _send(h, i, fx=100.0)[0])
    status = h.fresh_status(lambda s: int(s["frames_published"]) >= 4)
    assert status["device"] == "cpu" and status["precision"] == "fp32" and status["model"] == "trained"
    assert status["backend"] == choose_backend(torch.device("cpu"), torch.float32)[0]  # auto, by the README's rule
    assert status["state"] == "active" and status["programs"]  # graphs held, or n/a for dynamic-shape backends
    assert status["path_graphs"] == "off (eager)"  # replayed with the cudagraph backend only
    assert float(status["inference_ms_median"]) > 0 and float(status["output_rate_hz"]) > 0
    assert float(status["input_rate_hz"]) > 0
    for key in ("latency_ms_median", "points_latency_ms_median", "frames_dropped", "rejected_total"):
        assert key in status


def test_a_fast_camera_drops_frames_instead_of_queueing(node):
    h = node.h
    h.received["diagnostics"].clear()  # a status from now, not one kept from an earlier test
    base = int(h.fresh_status(lambda s: True)["frames_dropped"])
    rgb = _frame(9)
    stamps = []
    for i in range(500, 540):  # 40 frames as fast as we can publish them
        stamp = h.stamp(i)
        h.info_pub.publish(camera_info_msg(stamp, W, H, fx=100.0))
        h.image_pub.publish(rgb_image_msg(rgb, stamp))
        stamps.append(stamp)
        h.executor.spin_once(timeout_sec=0.0)
    _depth_for(h, stamps[-1])  # the newest frame always gets through
    status = h.fresh_status(lambda s: int(s["frames_dropped"]) > base)
    got = [m for m in h.received["depth"] if 500 <= m.header.stamp.sec - 1_700_000_000 < 540]
    assert len(got) < 40
    assert int(status["frames_dropped"]) - base + len(got) <= 40


def test_camera_info_scaling_stride_rgb_and_compressed_input(ros, checkpoint, tmp_path, reference):
    import cv2

    n = Node(ros, tmp_path, "/cam_b", {"checkpoint": str(checkpoint), "device": "cpu", "output_size": "80x24",
                                       "points_stride": 2, "points_rgb": True, "input_transport": "compressed",
                                       "backend": "onnxruntime" if _has("onnxruntime") else "eager"})
    h = n.h
    try:
        # Nobody listens yet: frames are counted as idle and nothing is computed.
        h.wait_for_node(h.compressed_pub)
        ok, png = cv2.imencode(".png", _frame(7)[..., ::-1])
        from sensor_msgs.msg import CompressedImage

        for i in range(3):
            msg = CompressedImage(format="png")
            msg.header.stamp = h.stamp(600 + i)
            msg.data = png.tobytes()
            h.compressed_pub.publish(msg)
        status = h.fresh_status(lambda s: int(s["frames_idle_no_subscribers"]) >= 3, 30, "idle frames")
        assert status["frames_published"] == "0"

        h.subscribe_outputs()
        h.wait_for_node(h.compressed_pub)
        stamp = h.stamp(610)
        h.info_pub.publish(camera_info_msg(stamp, W, H, fx=100.0, fy=100.0, cx=80.0, cy=24.0))
        msg = CompressedImage(format="png")
        msg.header.stamp = stamp
        msg.data = png.tobytes()
        h.compressed_pub.publish(msg)
        depth = decoding.image_to_depth(_depth_for(h, stamp))
        assert depth.shape == (24, 80)
        np.testing.assert_allclose(depth, _expected_depth(reference, _frame(7), 100.0, (24, 80)), rtol=1e-4,
                                   equal_nan=True)
        h.spin_until(lambda: any(m.header.stamp == stamp for m in h.received["info"]), 30, "scaled camera_info")
        info = next(m for m in h.received["info"] if m.header.stamp == stamp)
        assert (info.width, info.height) == (80, 24)
        assert list(info.k) == pytest.approx([50, 0, 40, 0, 50, 12, 0, 0, 1])
        assert list(info.p) == pytest.approx([50, 0, 40, 0, 0, 50, 12, 0, 0, 0, 1, 0])
        assert (info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height) == (5, 10, 50, 30)
        h.spin_until(lambda: any(m.header.stamp == stamp for m in h.received["points"]), 30, "cloud")
        cloud = next(m for m in h.received["points"] if m.header.stamp == stamp)
        assert (cloud.height, cloud.width, cloud.point_step) == (12, 40, 32)
        assert [f.name for f in cloud.fields] == ["x", "y", "z", "rgb"]
        data = decoding.cloud_to_array(cloud)
        np.testing.assert_allclose(data[..., :3], depth_to_points(depth, 50, 50, 40, 12, stride=2), rtol=1e-6,
                                   equal_nan=True)
        packed = data[..., 4].view(np.uint32)
        small = cv2.resize(_frame(7), (80, 24), interpolation=cv2.INTER_AREA)[::2, ::2].astype(np.uint32)
        assert np.array_equal(packed, (small[..., 0] << 16) | (small[..., 1] << 8) | small[..., 2])

        corrupt = CompressedImage(format="jpeg")
        corrupt.header.stamp = h.stamp(611)
        corrupt.data = b"\xff\xd8\xff garbage"
        h.compressed_pub.publish(corrupt)
        h.fresh_status(lambda s: "truncated" in s["last_rejection"], 30, "corrupt jpeg rejection")
        stamp = h.stamp(612)
        h.info_pub.publish(camera_info_msg(stamp, W, H, fx=100.0))
        msg.header.stamp = stamp
        h.compressed_pub.publish(msg)
        _depth_for(h, stamp)
        # Malformed compressed input, each rejected by reason and followed by a good frame that is processed.
        ok, jpeg = cv2.imencode(".jpg", _frame(8)[..., ::-1])
        cases = [("empty_compressed", "jpeg", b""), ("truncated_compressed", "jpeg", jpeg.tobytes()[:len(jpeg) // 2]),
                 ("truncated_compressed", "png", png.tobytes()[:-30]), ("not_an_image", "jpeg", b"GIF89a" * 20),
                 ("unknown_compressed_format", "webp", b"RIFF0000WEBPVP8 "),
                 ("undecodable_compressed", "jpeg", b"\xff\xd8" + b"\x00" * 64 + b"\xff\xd9")]
        for k, (reason, fmt, data) in enumerate(cases):
            before = h.status()
            bad = CompressedImage(format=fmt)
            bad.header.stamp = h.stamp(620 + 2 * k)
            bad.data = data
            h.compressed_pub.publish(bad)
            status = h.fresh_status(lambda s, b=before: int(s["rejected_total"]) > int(b["rejected_total"]), 30, reason)
            assert int(status[f"rejected.{reason}"]) > int(before.get(f"rejected.{reason}", 0)), (reason, status)
            stamp = h.stamp(621 + 2 * k)
            h.info_pub.publish(camera_info_msg(stamp, W, H, fx=100.0))
            msg.header.stamp = stamp
            h.compressed_pub.publish(msg)
            _depth_for(h, stamp)
    finally:
        assert n.stop(signal.SIGTERM) == 0, n.log.read_text()


def test_configure_fails_cleanly_on_a_missing_checkpoint(ros, tmp_path):
    from lifecycle_msgs.srv import GetState

    n = Node(ros, tmp_path, "/cam_c", {"checkpoint": str(tmp_path / "missing.pt"), "device": "cpu"})
    try:
        client = n.h.node.create_client(GetState, "depth_node/get_state")
        n.h.spin_until(lambda: client.service_is_ready(), 90, "the lifecycle service")
        assert n.h.call(client, GetState.Request(), "get_state").current_state.label == "unconfigured"
        status = n.h.fresh_status(lambda s: True, 30)
        assert status["level"] == 2 and "does not exist" in status["message"]
        assert n.proc.poll() is None
        # A transition the state does not have (activate while unconfigured, as a second `ros2 lifecycle set` or
        # a client asking again would send) is refused; rclpy alone would end the process.
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        change = n.h.node.create_client(ChangeState, "depth_node/change_state")
        request = ChangeState.Request(transition=Transition(id=Transition.TRANSITION_ACTIVATE))
        assert n.h.call(change, request, "change_state").success is False
        time.sleep(0.5)
        assert n.proc.poll() is None
        assert n.h.call(client, GetState.Request(), "get_state").current_state.label == "unconfigured"
    finally:
        code = n.stop()
    assert code == 0
    log = n.log.read_text()
    assert "configure failed: checkpoint" in log and "refused lifecycle transition 3" in log



def test_a_value_out_of_its_range_at_start_fails_configure_cleanly(ros, checkpoint, tmp_path):
    """-p scale_holdout:=1.5 at start: rclpy would end the process while declaring it; the node declares the
    default instead and its configure fails, saying which value and why."""
    n = Node(ros, tmp_path, "/cam_r", {"checkpoint": str(checkpoint), "device": "cpu", "scale_holdout": 1.5})
    try:
        status = n.h.fresh_status(lambda s: s["level"] == 2, 60, "the configure failure in diagnostics")
        assert "scale_holdout" in status["message"] and n.proc.poll() is None
    finally:
        code = n.stop()
    assert code == 0
    assert "configure failed: scale_holdout" in n.log.read_text()


def _endpoint_reliability(h, topic, kind):
    from rclpy.qos import ReliabilityPolicy

    def infos():
        getter = h.node.get_subscriptions_info_by_topic if kind == "sub" else h.node.get_publishers_info_by_topic
        return [i for i in getter(topic) if i.node_name == "depth_node"]
    h.spin_until(lambda: infos(), 60, f"depth_node's {kind} on {topic} in the graph")
    return ReliabilityPolicy(infos()[0].qos_profile.reliability)


def test_qos_defaults_and_rep2003_overrides(node, ros, checkpoint, tmp_path):
    from rclpy.qos import ReliabilityPolicy

    # Defaults: the image subscription follows its publishers (image_reliability auto: the harness publishes
    # reliably, so reliable), camera_info is sensor-data (best effort), publishers are reliable.
    assert _endpoint_reliability(node.h, "/cam_a/image", "sub") == ReliabilityPolicy.RELIABLE
    assert _endpoint_reliability(node.h, "/cam_a/camera_info", "sub") == ReliabilityPolicy.BEST_EFFORT
    assert _endpoint_reliability(node.h, "/cam_a/depth/image", "pub") == ReliabilityPolicy.RELIABLE
    # Each overridable at start-up with the standard qos_overrides parameters.
    n = Node(ros, tmp_path, "/cam_d", {
        "checkpoint": str(checkpoint), "device": "cpu",
        "qos_overrides./cam_d/image.subscription.reliability": "reliable",
        "qos_overrides./cam_d/depth/image.publisher.reliability": "best_effort"})
    try:
        assert _endpoint_reliability(n.h, "/cam_d/image", "sub") == ReliabilityPolicy.RELIABLE
        assert _endpoint_reliability(n.h, "/cam_d/depth/image", "pub") == ReliabilityPolicy.BEST_EFFORT
        assert _endpoint_reliability(n.h, "/cam_d/depth/points", "pub") == ReliabilityPolicy.RELIABLE
        assert _endpoint_reliability(n.h, "/cam_d/camera_info", "sub") == ReliabilityPolicy.BEST_EFFORT
    finally:
        assert n.stop() == 0, n.log.read_text()


def test_image_subscription_follows_its_publishers_and_estimates_delivery(ros, checkpoint, tmp_path):
    """image_reliability auto: reliable while every publisher is reliable (a stock driver's lost fragments are sent
    again), best effort as soon as a best-effort publisher joins; image_delivery in diagnostics compares the images
    that came with their camera_info messages."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    n = Node(ros, tmp_path, "/cam_q", {"checkpoint": str(checkpoint), "device": "cpu", "diagnostics_period": 0.5})
    h = n.h
    try:
        h.subscribe_outputs(("depth",))
        h.wait_for_node()
        h.spin_until(lambda: _endpoint_reliability(h, "/cam_q/image", "sub") == ReliabilityPolicy.RELIABLE, 30,
                     "a reliable image subscription")
        status = h.fresh_status(lambda s: s.get("image_reliability") == "reliable", 30, "image_reliability")
        for i in range(3):
            _depth_for(h, _send(h, 900 + i, fx=100.0)[0])
        # camera_info for frames whose images never come: the node counts them as missing.
        for i in range(3, 5):
            h.info_pub.publish(camera_info_msg(h.stamp(900 + i), W, H))
        status = h.fresh_status(lambda s: s.get("images_missing") == "2", 30, "the delivery estimate")
        assert status["image_delivery"] == "0.60"  # 3 of 5 camera_info messages had their image
        # A best-effort publisher joins: the subscription follows (a reliable one would not match it).
        best_effort = h.node.create_publisher(Image, "image", QoSProfile(depth=5,
                                                                          reliability=ReliabilityPolicy.BEST_EFFORT))
        h.fresh_status(lambda s: s.get("image_reliability") == "best_effort", 30, "a best-effort subscription")
        h.spin_until(lambda: best_effort.get_subscription_count() > 0, 30, "the best-effort publisher to match")
        stamp = h.stamp(910)
        h.info_pub.publish(camera_info_msg(stamp, W, H))
        best_effort.publish(rgb_image_msg(_frame(910), stamp))
        _depth_for(h, stamp)
        assert "is now best_effort" in n.log.read_text()
    finally:
        assert n.stop() == 0, n.log.read_text()


def _set(h, namespace, **values):
    """Set parameters of the node through its real parameter service; returns the SetParametersResult list."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = h.node.create_client(SetParameters, f"{namespace}/depth_node/set_parameters")
    request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    result = h.call(client, request, "set_parameters")
    h.node.destroy_client(client)
    return result.results


def _get(h, namespace, name):
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    client = h.node.create_client(GetParameters, f"{namespace}/depth_node/get_parameters")
    result = h.call(client, GetParameters.Request(names=[name]), "get_parameters")
    h.node.destroy_client(client)
    return parameter_value_to_python(result.values[0])


def test_every_parameter_is_described_with_its_range_choices_and_when_it_changes(node):
    """What `ros2 param describe` shows: every declared parameter has the table's meaning and when a change takes
    effect; numbers their range (ROS refuses values outside it), strings with choices those choices."""
    from rcl_interfaces.msg import ParameterType
    from rcl_interfaces.srv import DescribeParameters

    from space_clip_ros.node.settings import CHANGES, SPECS

    h = node.h
    client = h.node.create_client(DescribeParameters, "/cam_a/depth_node/describe_parameters")
    result = h.call(client, DescribeParameters.Request(names=[s.name for s in SPECS]), "describe_parameters")
    h.node.destroy_client(client)
    described = {d.name: d for d in result.descriptors}
    assert list(described) == [s.name for s in SPECS]
    for spec in SPECS:
        d = described[spec.name]
        assert d.description.startswith(spec.description) and CHANGES[spec.change] in d.description, spec.name
        if isinstance(spec.default, float):
            assert d.type == ParameterType.PARAMETER_DOUBLE and len(d.floating_point_range) == 1, spec.name
            assert (d.floating_point_range[0].from_value, d.floating_point_range[0].to_value) == (spec.low, spec.high)
        elif isinstance(spec.default, int) and not isinstance(spec.default, bool):
            assert d.type == ParameterType.PARAMETER_INTEGER and len(d.integer_range) == 1, spec.name
            assert (d.integer_range[0].from_value, d.integer_range[0].to_value) == (spec.low, spec.high)
        if spec.choices:
            assert all(repr(choice) in d.additional_constraints for choice in spec.choices), spec.name
    assert described["cameras"].dynamic_typing
    [refused] = _set(h, "/cam_a", scan_min_confidence=1.5)  # outside its range: ROS refuses it, with the range
    assert not refused.successful and "out of range" in refused.reason and "Max: 1.0" in refused.reason


def test_runtime_parameter_changes_are_checked_and_applied(node, reference):
    h = node.h
    refused = {
        "colormap": ("nope", "colormap must be one of"),
        "min_depth": (500.0, "min_depth < max_depth"),
        "device": ("cuda", "needs the model loaded again"),
        "backend": ("eager", "needs the model loaded again"),
        "input_transport": ("compressed", "changes the subscriptions"),
    }
    for name, (value, reason) in refused.items():
        [result] = _set(h, "/cam_a", **{name: value})
        assert not result.successful and reason in result.reason, (name, result.reason)
    assert _get(h, "/cam_a", "colormap") == "turbo" and _get(h, "/cam_a", "device") == "cpu"
    # The node keeps working with its values ...
    stamp, rgb = _send(h, 700, fx=100.0)
    np.testing.assert_allclose(decoding.image_to_depth(_depth_for(h, stamp)), _expected_depth(reference, rgb, 100.0),
                               rtol=1e-4, equal_nan=True)
    # ... and applies a valid change from the next frame on.
    expected = reference(_frame(701), fx=100.0)
    cut = float(np.nanmedian(expected))
    assert all(r.successful for r in _set(h, "/cam_a", max_depth=cut, colormap="gray"))
    try:
        depth = decoding.image_to_depth(_depth_for(h, _send(h, 701, fx=100.0)[0]))
        kept = (expected >= 0.1) & (expected <= cut)
        assert 0 < kept.sum() < kept.size
        assert np.isnan(depth[~kept]).all()
        np.testing.assert_allclose(depth[kept], expected[kept], rtol=1e-4)
    finally:
        assert all(r.successful for r in _set(h, "/cam_a", max_depth=80.0, colormap="turbo"))


def test_several_cameras_share_one_model_each_with_its_own_outputs(ros, checkpoint, tmp_path, reference):
    """Two cameras of different sizes and intrinsics under one node: each output carries its camera's header and
    focal scale, the batched forward gives each camera the depth it would get alone, diagnostics are per camera."""
    sizes = {"front": (48, 160), "stereo/left": (40, 96)}
    fxs = {"front": 100.0, "stereo/left": 70.0}
    n = Node(ros, tmp_path, "/rig", {"checkpoint": str(checkpoint), "device": "cpu",
                                     "cameras": "[front, stereo/left]"})
    rigs = {name: Harness(f"/rig/{name}", "/rig", name) for name in sizes}
    try:
        for h in rigs.values():
            h.subscribe_outputs()
        for h in rigs.values():
            h.wait_for_node()
        frames = {}
        for round_ in range(2):  # both cameras' frames wait together, so they share forwards
            for i, (name, h) in enumerate(rigs.items()):
                height, width = sizes[name]
                rgb = np.random.default_rng(10 * round_ + i).integers(0, 256, (height, width, 3), dtype=np.uint8)
                stamp = h.stamp(800 + 10 * round_ + i)
                h.info_pub.publish(camera_info_msg(stamp, width, height, fx=fxs[name], frame_id=f"{name}_optical"))
                h.image_pub.publish(rgb_image_msg(rgb, stamp, frame_id=f"{name}_optical"))
                frames[name] = (stamp, rgb)
            for name, h in rigs.items():
                stamp, rgb = frames[name]
                msg = _depth_for(h, stamp)
                assert msg.header.frame_id == f"{name}_optical" and (msg.height, msg.width) == sizes[name]
                np.testing.assert_allclose(decoding.image_to_depth(msg), _expected_depth(reference, rgb, fxs[name]),
                                           rtol=1e-4, equal_nan=True)
        for name, h in rigs.items():
            stamp = frames[name][0]
            h.spin_until(lambda h=h, stamp=stamp: any(m.header.stamp == stamp for m in h.received["points"]), 30,
                         "the cloud")
            cloud = next(m for m in h.received["points"] if m.header.stamp == stamp)
            assert (cloud.height, cloud.width) == sizes[name] and cloud.header.frame_id == f"{name}_optical"
            info = next(m for m in h.received["info"] if m.header.stamp == stamp)
            assert info.k[0] == pytest.approx(fxs[name])
        assert not rigs["front"].received["depth"] or all(
            m.header.frame_id == "front_optical" for m in rigs["front"].received["depth"])
        h = rigs["front"]

        def per_camera():
            found = {}
            for array in h.received["diagnostics"][-5:]:
                for status in array.status:
                    values = {kv.key: kv.value for kv in status.values}
                    if status.name.startswith("/rig/depth_node: depth ") and "camera" in values:
                        found[values["camera"]] = values
            return found

        h.spin_until(lambda: set(per_camera()) == set(sizes) and all(
            int(v["frames_published"]) >= 2 for v in per_camera().values()), 30, "per-camera diagnostics")
        # Changing the cameras of a configured node is refused: the topics would change under the subscribers.
        [result] = _set(h, "/rig", cameras=["front"])
        assert not result.successful and "changes the node's topics" in result.reason
    finally:
        for h in rigs.values():
            h.destroy()
        assert n.stop() == 0, n.log.read_text()


def test_scan_and_filtered_cloud_for_a_planner(node, reference):
    """depth/scan is depthimage_to_laserscan's scan of the published depth and depth/camera_info (depth beyond
    max_depth +Inf), in the x-forward frame; depth/points_filtered is the published depth's cloud, filtered. Both
    only while someone subscribes; parameters change them at runtime."""
    from test_planner_outputs import reference_scan

    from space_clip_ros.planner_outputs import filtered_points

    h = node.h
    before = h.fresh_status(lambda s: True)
    assert before["subscribers.scan"] == "0" and before["subscribers.points_filtered"] == "0"
    h.subscribe_outputs(("scan", "points_filtered"))
    h.wait_for_node()
    fx = 100.0
    assert all(r.successful for r in _set(h, "/cam_a", scan_height=5, points_filtered_voxel=0.0,
                                          points_filtered_edge_threshold=0.0, points_filtered_max_range=25.0))
    try:
        stamp, rgb = _send(h, 1000, fx=fx, fy=fx, cx=80.0, cy=24.0)
        h.spin_until(lambda: any(m.header.stamp == stamp for m in h.received["scan"]), 60, "depth/scan")
        h.spin_until(lambda: any(m.header.stamp == stamp for m in h.received["points_filtered"]), 30,
                     "depth/points_filtered")
        scan = next(m for m in h.received["scan"] if m.header.stamp == stamp)
        info = next(m for m in h.received["info"] if m.header.stamp == stamp)
        raw = reference(rgb, fx=fx)
        depth = np.where(raw > 80.0, np.inf, np.where(raw < 0.1, np.nan, raw)).astype(np.float32)
        angle_min, angle_max, increment, expected = reference_scan(depth, list(info.k), list(info.p), 5, 0.3, 20.0)
        assert scan.header.frame_id == "cam" and len(scan.ranges) == W
        assert (scan.angle_min, scan.angle_max, scan.angle_increment) == pytest.approx((angle_min, angle_max,
                                                                                         increment))
        assert (scan.range_min, scan.range_max) == (pytest.approx(0.3), pytest.approx(20.0))
        np.testing.assert_allclose(np.array(scan.ranges), expected, rtol=1e-4, equal_nan=True)
        cloud = next(m for m in h.received["points_filtered"] if m.header.stamp == stamp)
        assert (cloud.height, cloud.point_step, cloud.is_dense, cloud.header.frame_id) == (1, 12, True, "cam_optical")
        points = np.frombuffer(cloud.data, np.float32).reshape(-1, 3)
        published = decoding.image_to_depth(_depth_for(h, stamp))
        expected = filtered_points(torch.from_numpy(published), fx, fx, 80.0, 24.0, 0.3, 25.0).numpy()
        np.testing.assert_allclose(points, expected, rtol=1e-4)
        # Defaults: a 5 cm voxel grid and the flying-pixel filter make it smaller than the organized cloud.
        assert all(r.successful for r in _set(h, "/cam_a", points_filtered_voxel=0.05,
                                              points_filtered_edge_threshold=0.1))
        stamp, _ = _send(h, 1001, fx=fx, fy=fx, cx=80.0, cy=24.0)
        h.spin_until(lambda: any(m.header.stamp == stamp for m in h.received["points_filtered"]), 60, "filtered")
        small = next(m for m in h.received["points_filtered"] if m.header.stamp == stamp)
        organized = next(m for m in h.received["points"] if m.header.stamp == stamp)
        assert 0 < small.width and len(small.data) < len(organized.data)
        [result] = _set(h, "/cam_a", points_filtered_voxel=-1.0)  # outside its declared range: ROS refuses it
        assert not result.successful and "points_filtered_voxel out of range Min: 0.0" in result.reason
        # A scan_height taller than the image: no scan, counted and logged (depthimage_to_laserscan's error).
        assert all(r.successful for r in _set(h, "/cam_a", scan_height=60))
        stamp, _ = _send(h, 1002, fx=fx, fy=fx, cx=80.0, cy=24.0)
        _depth_for(h, stamp)
        h.fresh_status(lambda s: int(s["scan_skipped"]) >= 1, 30, "scan_skipped")
        assert not any(m.header.stamp == stamp for m in h.received["scan"])
        assert "depth/scan not published: scan_height ( 60 pixels) is too large" in node.log.read_text()
    finally:
        assert all(r.successful for r in _set(h, "/cam_a", scan_height=1, points_filtered_voxel=0.05,
                                              points_filtered_edge_threshold=0.1, points_filtered_max_range=10.0))
