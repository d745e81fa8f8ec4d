"""A test-side ROS 2 participant: publishes camera frames to a depth_node in another process and records outputs."""

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from space_clip_ros.ros.demo import local_ros_environment
from space_clip_ros.synthetic import KITTI_K

_DOMAIN = random.Random(os.getpid()).randint(1, 101)


def ros_environment(tmp_path: Path) -> dict:
    """Per-run domain id, logs in tmp, localhost-only discovery and the shipped localhost Fast DDS profile."""
    env = local_ros_environment({k: v for k, v in os.environ.items()
                                 if k not in ("ROS_DOMAIN_ID", "FASTRTPS_DEFAULT_PROFILES_FILE",
                                              "FASTDDS_DEFAULT_PROFILES_FILE")})
    env["ROS_DOMAIN_ID"] = str(_DOMAIN)
    env["ROS_LOG_DIR"] = str(tmp_path / "ros_log")
    return env


def start_node(env: dict, namespace: str, params: dict, log_path: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "space_clip_ros.ros.depth_node", "--ros-args", "-r", f"__ns:={namespace}"]
    for key, value in params.items():
        if isinstance(value, bool):
            value = str(value).lower()
        args += ["-p", f"{key}:={value}"]
    log = open(log_path, "w")
    return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)


class Harness:
    """Publishes a camera's frames into ``namespace`` and records the node's outputs there. ``node_namespace`` and
    ``camera``: where the node runs and which of its cameras this is, when it has several (``cameras``)."""

    def __init__(self, namespace: str, node_namespace: str = None, camera: str = ""):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, LaserScan, PointCloud2

        self.ns = namespace
        self.node_ns = node_namespace or namespace
        self.camera = camera
        self.node = rclpy.create_node("test_harness", namespace=namespace)
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.node.create_publisher(Image, "image", qos)
        self.compressed_pub = self.node.create_publisher(CompressedImage, "image/compressed", qos)
        self.info_pub = self.node.create_publisher(CameraInfo, "camera_info", qos)
        self.received = {"depth": [], "info": [], "points": [], "colored": [], "scan": [], "points_filtered": [],
                         "confidence": [], "diagnostics": []}
        self.arrival = {key: [] for key in self.received}  # wall-clock receive time of each message
        self._subs = {}
        self._types = {"depth": (Image, "depth/image"), "info": (CameraInfo, "depth/camera_info"),
                       "points": (PointCloud2, "depth/points"), "colored": (Image, "depth/colored"),
                       "scan": (LaserScan, "depth/scan"), "points_filtered": (PointCloud2, "depth/points_filtered"),
                       "confidence": (Image, "depth/confidence")}
        self._qos = qos
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._keep("diagnostics"), 50)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)

    def _keep(self, key):
        def callback(msg):
            self.arrival[key].append(time.time())
            self.received[key].append(msg)
        return callback

    def subscribe_outputs(self, keys=("depth", "info", "points", "colored")):
        for key in keys:
            msg_type, topic = self._types[key]
            self._subs[key] = self.node.create_subscription(msg_type, topic, self._keep(key), self._qos)

    def spin_until(self, predicate, timeout=60.0, what="condition"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return
            self.executor.spin_once(timeout_sec=0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def wait_for_node(self, publisher=None, timeout=90.0):
        """Until frames sent now reach the node and its outputs reach us, judged on both sides: our publisher and
        subscriptions have matched (our side), and the node's diagnostics say that its image subscription has
        matched a publisher with our (reliable) QoS and that each output we subscribe to has a subscriber (the
        node's side; DDS matches each side on its own, and a reliable writer re-sends what a reader got before
        it matched)."""
        publisher = publisher or self.image_pub
        self.spin_until(lambda: publisher.get_subscription_count() > 0, timeout, "the node to subscribe")
        if self._subs:
            self.spin_until(lambda: all(self.node.count_publishers(f"{self.ns}/{self._types[k][1]}") > 0
                                        for k in self._subs), timeout, "the node's publishers")
        self.spin_until(lambda: self._matched(), timeout, "output subscriptions to match")

        def node_side(status):
            return (status.get("image_reliability") == "reliable" and int(status.get("image_publishers", 0)) > 0
                    and all(int(status.get(f"subscribers.{k}", 0)) > 0 for k in self._subs))
        self.fresh_status(node_side, timeout, "the node's side to match (diagnostics)")

    def _matched(self):
        return all(sub.get_publisher_count() > 0 for sub in self._subs.values())

    def call(self, client, request, what="service", timeout=60.0, attempt_s=5.0):
        """The response of ``client`` to ``request``, asking again when none came within ``attempt_s``: a service
        whose server has not yet matched the client's response reader drops the response (Fast DDS logs "failed to
        send response (timeout)"), which a loaded machine hits right after the client appears."""
        self.spin_until(client.service_is_ready, timeout, f"the {what} service")
        deadline = time.time() + timeout
        while time.time() < deadline:
            future = client.call_async(request)
            try:
                self.spin_until(future.done, min(attempt_s, max(0.1, deadline - time.time())), what)
            except AssertionError:
                client.remove_pending_request(future)
                continue
            return future.result()
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def stamp(self, i):
        from builtin_interfaces.msg import Time

        return Time(sec=1_700_000_000 + i, nanosec=1000 * i)

    def status(self):
        """The node's latest diagnostics values for this camera as a dict (or None)."""
        for array in reversed(self.received["diagnostics"]):
            for status in array.status:
                if self.camera:
                    mine = status.name == f"{self.node_ns}/depth_node: depth {self.camera}"
                else:
                    mine = status.name.startswith(self.ns + "/")
                if mine:
                    level = status.level if isinstance(status.level, int) else ord(status.level)
                    return {"level": level, "message": status.message,
                            **{kv.key: kv.value for kv in status.values}}
        return None

    def fresh_status(self, predicate, timeout=30.0, what="diagnostics"):
        self.spin_until(lambda: self.status() is not None and predicate(self.status()), timeout, what)
        return self.status()

    def destroy(self):
        self.executor.shutdown()
        self.node.destroy_node()


def rgb_image_msg(rgb: np.ndarray, stamp, frame_id="cam_optical", encoding="rgb8", pad=0):
    from sensor_msgs.msg import Image

    channels = {"rgb8": rgb, "bgr8": rgb[..., ::-1],
                "rgba8": np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], 2),
                "mono8": rgb[..., :1]}[encoding]
    h, w, c = channels.shape
    rows = np.zeros((h, w * c + pad), np.uint8)
    rows[:, :w * c] = channels.reshape(h, w * c)
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=w * c + pad)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.data = rows.tobytes()
    return msg


def camera_info_msg(stamp, width, height, fx=KITTI_K[0], fy=KITTI_K[1], cx=KITTI_K[2], cy=KITTI_K[3],
                    frame_id="cam_optical"):
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.header.stamp, info.header.frame_id = stamp, frame_id
    info.d = [0.0] * 5
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 10, 20, 100, 60
    return info
