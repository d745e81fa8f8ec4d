"""depth_node over real DDS with a scale reference and temporal fusion: a lidar cloud in another frame through a
tf chain on /tf_static, the camera's pose in odom on /tf, broken and missing references, depth/confidence and the
alignment's /diagnostics."""

import math

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed: pip install -e '.[ros]'")
pytest.importorskip("tf2_msgs", reason="tf2_msgs not installed: pip install ../shared/ros2_launch_jazzy/wheels/"
                    "ros_tf2_msgs-*.whl (a ROS 2 install ships it)")

from oracles import depth_to_points, points_to_cloud  # noqa: E402
from ros_harness import Harness, camera_info_msg, rgb_image_msg, start_node  # noqa: E402

from space_clip_ros import DepthEstimator, load_checkpoint  # noqa: E402
from space_clip_ros.geometry import project_to_depth  # noqa: E402
from space_clip_ros.node import decoding  # noqa: E402
from space_clip_ros.tf_tree import matrix_quaternion  # noqa: E402

W, H = 160, 48
FX, CX, CY = 100.0, 80.0, 24.0
SCALE = 1.5  # the range sensor says everything is 1.5x as far as the model does
#: base_link -> lidar: 1.2 m up, 0.3 m forward, yawed 10 degrees; base_link -> cam_optical: z forward.
LIDAR_POSE = np.array([[math.cos(0.17), -math.sin(0.17), 0, 0.3], [math.sin(0.17), math.cos(0.17), 0, 0.05],
                       [0, 0, 1, 1.2], [0, 0, 0, 1.0]])
CAMERA_POSE = np.array([[0, 0, 1.0, 0.5], [-1, 0, 0, 0], [0, -1, 0, 1.0], [0, 0, 0, 1.0]])


def _transform(parent, child, matrix, stamp):
    from geometry_msgs.msg import TransformStamped

    t = TransformStamped()
    t.header.frame_id, t.header.stamp, t.child_frame_id = parent, stamp, child
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = map(float, matrix[:3, 3])
    q = matrix_quaternion(matrix[:3, :3])
    t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w = map(float, q)
    return t


class Robot:
    """The test's side: camera, lidar and tf publishers, and the node's outputs."""

    def __init__(self, namespace):
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2
        from tf2_msgs.msg import TFMessage

        self.h = Harness(namespace)
        node = self.h.node
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.cloud_pub = node.create_publisher(PointCloud2, "scale_reference/points", reliable)
        self.tf_pub = node.create_publisher(TFMessage, "/tf", QoSProfile(depth=100))
        static_qos = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                                reliability=ReliabilityPolicy.RELIABLE)
        self.static_pub = node.create_publisher(TFMessage, "/tf_static", static_qos)
        stamp = self.h.stamp(0)
        self.static_pub.publish(TFMessage(transforms=[_transform("base_link", "lidar", LIDAR_POSE, stamp),
                                                      _transform("base_link", "cam_optical", CAMERA_POSE, stamp)]))

    def odom(self, stamp):
        from tf2_msgs.msg import TFMessage

        self.tf_pub.publish(TFMessage(transforms=[_transform("odom", "base_link", np.eye(4), stamp)]))

    def lidar(self, stamp, depth, scale=SCALE, stride=2):
        """A cloud in the lidar's frame of the points the camera sees at ``depth`` x ``scale``."""
        from std_msgs.msg import Header

        points = depth_to_points(np.nan_to_num(depth, nan=0.0) * scale, FX, FX, CX, CY, stride)
        lidar_from_camera = np.linalg.inv(LIDAR_POSE) @ CAMERA_POSE
        moved = points @ lidar_from_camera[:3, :3].T.astype(np.float32) + lidar_from_camera[:3, 3].astype(np.float32)
        self.cloud_pub.publish(points_to_cloud(moved.astype(np.float32), Header(stamp=stamp,
                                                                                         frame_id="lidar")))

    def frame(self, i, rgb):
        stamp = self.h.stamp(i)
        self.odom(stamp)
        self.h.info_pub.publish(camera_info_msg(stamp, W, H, fx=FX, fy=FX, cx=CX, cy=CY))
        self.h.image_pub.publish(rgb_image_msg(rgb, stamp))
        return stamp

    def output(self, key, stamp, timeout=60.0):
        def find():
            return [m for m in self.h.received[key] if m.header.stamp == stamp]
        self.h.spin_until(lambda: find(), timeout, f"{key} for stamp {stamp.sec}")
        return find()[0]


@pytest.fixture(scope="module")
def robot(ros, checkpoint, tmp_path_factory):
    log = tmp_path_factory.mktemp("aligned") / "node.log"
    proc = start_node(ros, "/aligned", {"checkpoint": str(checkpoint), "device": "cpu", "scale_reference": "points",
                                        "scale_time_constant": 0.0, "scale_hold_s": 2.0, "scale_min_points": 20,
                                        "temporal_filter": "odom", "points_filtered_edge_threshold": 0.0}, log)
    r = Robot("/aligned")
    try:
        r.h.subscribe_outputs(("depth", "confidence"))
        r.h.wait_for_node()
        r.h.spin_until(lambda: r.cloud_pub.get_subscription_count() > 0, 60, "the node's reference subscription")
        yield r
    finally:
        if proc.poll() is None:
            proc.send_signal(2)
            proc.wait(timeout=20)
        r.h.destroy()


@pytest.fixture(scope="module")
def expected(checkpoint):
    reference = DepthEstimator(load_checkpoint(checkpoint), device="cpu", backend="eager")
    rgb = np.random.default_rng(5).integers(0, 256, (H, W, 3), dtype=np.uint8)
    depth = reference(rgb, fx=FX)
    return rgb, depth


def _masked(depth):
    return np.where((depth >= 0.1) & (depth <= 80.0), depth, np.nan)


def test_no_reference_publishes_the_models_depth_and_says_why(robot, expected):
    rgb, depth = expected
    stamp = robot.frame(1, rgb)
    got = decoding.image_to_depth(robot.output("depth", stamp))
    np.testing.assert_allclose(got, _masked(depth), rtol=1e-4, equal_nan=True)
    status = robot.h.fresh_status(lambda s: s.get("scale_state") == "unaligned")
    assert status["scale"] == "1.0000" and status["scale_reason"].startswith("reference_none")
    assert int(status["unaligned.reference_none"]) >= 1 and "transforms received" in status["tf"]


def test_lidar_through_tf_aligns_every_pixel_and_reports_accuracy(robot, expected):
    rgb, depth = expected
    for i in range(10, 20):  # a best-effort reference may miss the node's first moments: send again until aligned
        stamp = robot.h.stamp(i)
        robot.lidar(stamp, depth)
        robot.frame(i, rgb)
        got = decoding.image_to_depth(robot.output("depth", stamp))
        if np.nanmedian(got / depth) > 1.2:
            robot.aligned_at = i
            break
    else:
        raise AssertionError("the node never aligned to the lidar")
    np.testing.assert_allclose(got, _masked(depth * SCALE), rtol=1e-3, equal_nan=True)
    status = robot.h.fresh_status(lambda s: s.get("scale_state") == "aligned")
    assert float(status["scale"]) == pytest.approx(SCALE, rel=1e-3)
    assert int(status["scale_points"]) > 200 and int(status["scale_held_out"]) > 40
    assert float(status["scale_inlier_fraction"]) == 1.0
    assert float(status["abs_rel_before"]) == pytest.approx(1 - 1 / SCALE, rel=1e-2)
    assert float(status["abs_rel_after"]) < 2e-3 and float(status["delta1_after"]) == 1.0


def test_stopped_reference_holds_the_scale_then_drops_it(robot, expected):
    rgb, depth = expected
    last = getattr(robot, "aligned_at", 19)
    stamp = robot.frame(last + 1, rgb)  # one second after the last lidar scan: held (scale_hold_s 2)
    got = decoding.image_to_depth(robot.output("depth", stamp))
    np.testing.assert_allclose(got, _masked(depth * SCALE), rtol=1e-3, equal_nan=True)
    status = robot.h.fresh_status(lambda s: s.get("scale_state") == "holding")
    assert status["scale_reason"].startswith("reference_old")
    stamp = robot.frame(last + 5, rgb)  # long after: the model's own scale again
    got = decoding.image_to_depth(robot.output("depth", stamp))
    np.testing.assert_allclose(got, _masked(depth), rtol=1e-3, equal_nan=True)
    robot.h.fresh_status(lambda s: s.get("scale_state") == "unaligned")


def test_broken_reference_clouds_are_counted_and_the_node_keeps_going(robot, expected):
    from std_msgs.msg import Header

    rgb, depth = expected
    stamp = robot.h.stamp(40)
    empty = points_to_cloud(np.zeros((0, 1, 3), np.float32), Header(stamp=stamp, frame_id="lidar"))
    robot.cloud_pub.publish(empty)
    nan = points_to_cloud(np.full((4, 4, 3), np.nan, np.float32), Header(stamp=stamp, frame_id="lidar"))
    robot.cloud_pub.publish(nan)
    robot.frame(40, rgb)
    robot.output("depth", stamp)
    status = robot.h.fresh_status(lambda s: int(s.get("rejected.reference_empty", 0)) >= 1
                                  and int(s.get("unaligned.reference_empty", 0)) >= 1)
    assert status["level"] == 1  # WARN: rejected inputs
    robot.lidar(robot.h.stamp(41), depth)  # and a good cloud aligns again
    stamp = robot.frame(41, rgb)
    got = decoding.image_to_depth(robot.output("depth", stamp))
    np.testing.assert_allclose(got, _masked(depth * SCALE), rtol=1e-3, equal_nan=True)


def test_confidence_grows_with_agreeing_frames_of_a_static_camera(robot, expected):
    rgb, depth = expected
    confidences = []
    for i in range(50, 53):
        stamp = robot.h.stamp(i)
        robot.lidar(stamp, depth)
        robot.frame(i, rgb)
        confidences.append(decoding.image_to_depth(robot.output("confidence", stamp)))
    valid = np.isfinite(_masked(depth))
    assert confidences[0].dtype == np.float32 and confidences[0].shape == (H, W)
    assert np.all(confidences[-1][~valid] == 0)
    steps = [float(np.median(c[valid])) for c in confidences]
    assert steps[1] > steps[0] and steps[2] == pytest.approx(steps[1] + 1 / 8)
    assert np.all((confidences[-1] >= 0) & (confidences[-1] <= 1))


def test_rgbd_reference_on_a_named_camera(ros, checkpoint, expected, tmp_path):
    """cameras [front], scale_reference depth: an RGB-D camera's 16UC1 image + camera_info on
    front/scale_reference/depth, 5 cm beside the colour camera (tf_static), aligns front's depth."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    rgb, depth = expected
    proc = start_node(ros, "/rgbd", {"checkpoint": str(checkpoint), "device": "cpu", "cameras": "front",
                                     "scale_reference": "depth", "scale_time_constant": 0.0,
                                     "scale_min_points": 20}, tmp_path / "node.log")
    h = Harness("/rgbd/front", node_namespace="/rgbd", camera="front")
    try:
        reliable = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
        depth_pub = h.node.create_publisher(Image, "scale_reference/depth", reliable)
        info_pub = h.node.create_publisher(CameraInfo, "scale_reference/camera_info", reliable)
        static = h.node.create_publisher(TFMessage, "/tf_static", QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL))
        beside = np.eye(4)
        beside[0, 3] = 0.05  # the depth camera 5 cm to the right of the colour camera, same orientation
        static.publish(TFMessage(transforms=[_transform("cam_optical", "depth_optical", beside, h.stamp(0))]))
        h.subscribe_outputs(("depth",))
        h.wait_for_node()
        h.spin_until(lambda: depth_pub.get_subscription_count() > 0 and info_pub.get_subscription_count() > 0, 60,
                     "the node's reference subscriptions")
        # What the depth camera measures: the model's depth x SCALE, seen from 5 cm to the right (a fronto-
        # parallel shift: the same depth, u moved by fx * 0.05 / z), in millimetres; 0 where nothing lands.
        truth = np.nan_to_num(depth * SCALE, nan=0.0)
        points = depth_to_points(truth, FX, FX, CX, CY).reshape(-1, 3)
        points = points[points[:, 2] > 0] - np.array([0.05, 0.0, 0.0], np.float32)
        k = np.array([[FX, 0, CX], [0, FX, CY], [0, 0, 1.0]])
        seen = project_to_depth(points, (H, W), k, None, "plumb_bob", 0.1, 80.0)
        millimetres = np.round(seen * 1000).astype(np.uint16)
        for i in range(1, 10):
            stamp = h.stamp(i)
            image = Image(height=H, width=W, encoding="16UC1", is_bigendian=0, step=2 * W)
            image.header.stamp, image.header.frame_id = stamp, "depth_optical"
            image.data = millimetres.tobytes()
            info = camera_info_msg(stamp, W, H, fx=FX, fy=FX, cx=CX, cy=CY, frame_id="depth_optical")
            info_pub.publish(info)
            depth_pub.publish(image)
            h.info_pub.publish(camera_info_msg(stamp, W, H, fx=FX, fy=FX, cx=CX, cy=CY))
            h.image_pub.publish(rgb_image_msg(rgb, stamp))
            h.spin_until(lambda s=stamp: any(m.header.stamp == s for m in h.received["depth"]), 60, "depth")
            got = decoding.image_to_depth(next(m for m in h.received["depth"] if m.header.stamp == stamp))
            if np.nanmedian(got / depth) > 1.2:
                break
        else:
            raise AssertionError("the node never aligned to the RGB-D reference")
        # Millimetre rounding and the shifted resampling: the fitted scale within 1%.
        np.testing.assert_allclose(np.nanmedian(got / depth), SCALE, rtol=0.01)
        status = h.fresh_status(lambda s: s.get("scale_state") == "aligned")
        assert status["camera"] == "front" and float(status["scale"]) == pytest.approx(SCALE, rel=0.01)
        assert float(status["abs_rel_after"]) < 0.02
    finally:
        if proc.poll() is None:
            proc.send_signal(2)
            proc.wait(timeout=20)
        h.destroy()
