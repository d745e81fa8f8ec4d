"""depth_node: camera images in; REP 118 depth, scaled camera_info, organized point clouds and a coloured depth out.

A thin lifecycle adapter over :class:`space_clip_ros.DepthEstimator` and the pure functions of
:mod:`space_clip_ros.geometry`. Topics are relative (remap them at launch):

    in:  image (sensor_msgs/Image) or image/compressed (input_transport: compressed), camera_info
    out: depth/image (32FC1 m, NaN unknown), depth/camera_info, depth/points, depth/colored (rgb8), /diagnostics

Latest frame only: while one frame is in inference, a newer one replaces the waiting one and the replaced frame is
counted as dropped, so latency does not grow when the camera is faster than the model.
"""

from __future__ import annotations

import collections
import os
import re
import statistics
import threading
import time
from typing import Any, Deque, Dict, Optional, Tuple

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from ..geometry import depth_to_points
from ..visualize import COLORMAPS, colorize_depth
from . import messages

#: Every parameter with its default; config/depth.yaml holds the same values (a test keeps them equal).
PARAMETERS: Dict[str, Any] = {
    "checkpoint": "",
    "backbone": "",
    "untrained_demo": False,
    "device": "auto",
    "precision": "fp32",
    "backend": "auto",
    "output_size": "input",
    "min_depth": 0.1,
    "max_depth": 80.0,
    "focal_scale_transfer": True,
    "publish_points": True,
    "points_stride": 1,
    "points_rgb": False,
    "publish_colored": True,
    "colormap": "turbo",
    "colored_min_depth": 1.0,
    "colored_max_depth": 50.0,
    "input_transport": "raw",
    "camera_info_cache": 30,
    "diagnostics_period": 1.0,
    "autostart": True,
}

LOG_THROTTLE_S = 5.0


def fastdds_profile_path() -> str:
    """The shipped Fast DDS profile: shared memory with 32 MB segments, so images and clouds arrive intact."""
    return os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "fastdds_profile.xml")


def use_shipped_fastdds_profile() -> None:
    """Point Fast DDS at the shipped profile unless the user chose one (Jazzy and Kilted variable names)."""
    if not (os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE") or os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE")):
        os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = fastdds_profile_path()
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = fastdds_profile_path()


class _Rate:
    """Events per second over a sliding window."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self.times: Deque[float] = collections.deque()

    def tick(self, now: float) -> None:
        self.times.append(now)

    def hz(self, now: float) -> float:
        while self.times and now - self.times[0] > self.window_s:
            self.times.popleft()
        if len(self.times) < 2:
            return 0.0
        return (len(self.times) - 1) / max(self.times[-1] - self.times[0], 1e-9)


def _sensor_qos() -> QoSProfile:
    """rclpy's sensor-data profile, as a new object per subscription: REP 2003 overrides (qos_overrides.*) are
    applied to the profile in place, so a shared one would carry one topic's override to every other."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def _publisher_qos() -> QoSProfile:
    """Reliable, depth 5, a new object per publisher (see _sensor_qos)."""
    return QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)


class DepthNode(LifecycleNode):
    """Lifecycle node: configure loads the model (and fails cleanly), activate subscribes."""

    def __init__(self, node_name: str = "depth_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for name, default in PARAMETERS.items():
            self.declare_parameter(name, default)
        self.estimator = None
        self._pubs: Dict[str, Any] = {}
        self._subs: list = []
        self._infos: Deque[CameraInfo] = collections.deque(maxlen=max(1, self._p("camera_info_cache")))
        self._cond = threading.Condition()
        self._pending: Optional[Tuple[Any, float]] = None
        self._worker: Optional[threading.Thread] = None
        self._running = False
        self._stats_lock = threading.Lock()
        self._counts = collections.Counter()
        self._last_rejection = ""
        self._last_log: Dict[str, float] = {}
        self._in_rate, self._out_rate = _Rate(), _Rate()
        self._latency_ms: Deque[float] = collections.deque(maxlen=50)
        self._points_latency_ms: Deque[float] = collections.deque(maxlen=50)
        self._inference_ms: Deque[float] = collections.deque(maxlen=50)
        self._status = "unconfigured"
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(float(self._p("diagnostics_period")), self._publish_diagnostics)
        if self._p("autostart"):
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()

    # ------------------------------------------------------------------ helpers
    def _p(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _log_throttled(self, key: str, text: str, level: str = "warn") -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, -1e9) >= LOG_THROTTLE_S:
            self._last_log[key] = now
            getattr(self.get_logger(), level)(text)

    def _reject(self, kind: str, reason: str) -> None:
        with self._stats_lock:
            self._counts["rejected"] += 1
            self._counts[f"rejected_{kind}"] += 1
            self._last_rejection = f"{kind}: {reason}"
        self._log_throttled(f"reject_{kind}", f"rejected {kind}: {reason} (counted in diagnostics; node continues)")

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        from ..estimator import DepthEstimator

        try:
            self._validate_parameters()
            if self._p("untrained_demo"):
                from ..model.untrained import build_untrained_model

                model = build_untrained_model()
                self.get_logger().warn("UNTRAINED demo model (random weights, explicitly requested with "
                                       "untrained_demo:=true): its depth is meaningless")
            elif not self._p("checkpoint"):
                raise ValueError("no checkpoint: set -p checkpoint:=/path/to/space_clip.pt (a trained decoder; "
                                 "see space-clip-convert), or -p untrained_demo:=true to run with random weights")
            else:
                model = self._p("checkpoint")
            self.estimator = DepthEstimator(model, device=self._p("device"), precision=self._p("precision"),
                                            backbone=self._p("backbone") or None, backend=self._p("backend"))
            self.estimator.warmup()  # compile / allocate now, not on the first frame
            overrides = QoSOverridingOptions.with_default_policies()
            for key, msg_type, topic in (("depth", Image, "depth/image"), ("info", CameraInfo, "depth/camera_info"),
                                         ("points", PointCloud2, "depth/points"), ("colored", Image, "depth/colored")):
                self._pubs[key] = self.create_publisher(msg_type, topic, _publisher_qos(),
                                                        qos_overriding_options=overrides)
        except Exception as error:  # a bad checkpoint, device or qos_overrides.* value: unconfigured, reason logged
            self.on_cleanup(state)
            self._status = f"configure failed: {error}"
            self.get_logger().error(f"configure failed: {error}")
            return TransitionCallbackReturn.FAILURE
        trained = "trained" if self.estimator.trained else "UNTRAINED"
        self._status = "configured"
        self.get_logger().info(
            f"model loaded ({trained}, {self.estimator.model.provenance.get('source', '?')}) on "
            f"{self.estimator.device} in {self._p('precision')}, backend {self.estimator.backend_name} "
            f"({self.estimator.backend_reason})")
        return TransitionCallbackReturn.SUCCESS

    def _validate_parameters(self) -> None:
        if self._p("input_transport") not in ("raw", "compressed"):
            raise ValueError(f"input_transport must be 'raw' or 'compressed', got {self._p('input_transport')!r}")
        if self._p("colormap") not in COLORMAPS:
            raise ValueError(f"colormap must be one of {COLORMAPS}, got {self._p('colormap')!r}")
        if int(self._p("points_stride")) < 1:
            raise ValueError("points_stride must be >= 1")
        if not 0 <= self._p("min_depth") < self._p("max_depth"):
            raise ValueError("need 0 <= min_depth < max_depth")
        self._fixed_output_size()  # raises on a malformed value

    def _fixed_output_size(self) -> Optional[Tuple[int, int]]:
        value = str(self._p("output_size")).strip().lower()
        if value in ("input", "model"):
            return None
        match = re.fullmatch(r"(\d+)x(\d+)", value)
        if not match or min(int(match.group(1)), int(match.group(2))) < 1:
            raise ValueError(f"output_size must be 'input', 'model' or 'WIDTHxHEIGHT', got {value!r}")
        return int(match.group(2)), int(match.group(1))  # (height, width)

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        overrides = QoSOverridingOptions.with_default_policies()
        if self._p("input_transport") == "compressed":
            self._subs.append(self.create_subscription(CompressedImage, "image/compressed", self._on_image,
                                                       _sensor_qos(), qos_overriding_options=overrides))
        else:
            self._subs.append(self.create_subscription(Image, "image", self._on_image, _sensor_qos(),
                                                       qos_overriding_options=overrides))
        self._subs.append(self.create_subscription(CameraInfo, "camera_info", self._on_camera_info,
                                                   _sensor_qos(), qos_overriding_options=overrides))
        self._running = True
        self._worker = threading.Thread(target=self._work, name="space_clip_inference", daemon=True)
        self._worker.start()
        self._status = "active"
        self.get_logger().info(f"active: subscribed to {self._subs[0].topic_name} and {self._subs[1].topic_name}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop_worker()
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs.clear()
        self._status = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        for pub in self._pubs.values():
            self.destroy_publisher(pub)
        self._pubs.clear()
        self.estimator = None
        self._status = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._stop_worker()
        return TransitionCallbackReturn.SUCCESS

    def _stop_worker(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=10.0)
        self._worker = None

    # ------------------------------------------------------------------ callbacks
    def _listeners(self) -> Dict[str, int]:
        return {key: pub.get_subscription_count() for key, pub in self._pubs.items()}

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._infos.append(msg)

    def _on_image(self, msg: Any) -> None:
        now = time.monotonic()
        self._in_rate.tick(now)
        if not any(self._listeners().values()):
            with self._stats_lock:
                self._counts["idle_no_subscribers"] += 1
            return
        with self._cond:
            if self._pending is not None:
                with self._stats_lock:
                    self._counts["dropped"] += 1
            self._pending = (msg, now)
            self._cond.notify()

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._running and self._pending is None:
                    self._cond.wait(timeout=0.5)
                if not self._running:
                    return
                msg, _ = self._pending
                self._pending = None
            try:
                self._process(msg)
            except Exception as error:  # a bug must not kill the worker: log it, count it, keep going
                self._reject("frame", f"internal error {type(error).__name__}: {error}")

    # ------------------------------------------------------------------ the work
    def _pair_camera_info(self, stamp) -> Optional[CameraInfo]:
        infos = list(self._infos)
        if not infos:
            return None
        for info in reversed(infos):
            if info.header.stamp.sec == stamp.sec and info.header.stamp.nanosec == stamp.nanosec:
                return info
        latest = infos[-1]
        self._log_throttled("info_stamp", "no camera_info with the image's stamp; using the latest one "
                                          f"(image {stamp.sec}.{stamp.nanosec:09d}, info "
                                          f"{latest.header.stamp.sec}.{latest.header.stamp.nanosec:09d})")
        with self._stats_lock:
            self._counts["camera_info_unmatched"] += 1
        return latest

    def _output_size(self, height: int, width: int) -> Tuple[int, int]:
        mode = str(self._p("output_size")).strip().lower()
        if mode == "input":
            return height, width
        if mode == "model":
            return tuple(self.estimator.model.preprocessing.output_size)  # type: ignore[return-value]
        return self._fixed_output_size()  # type: ignore[return-value]

    def _process(self, msg: Any) -> None:
        try:
            rgb = (messages.compressed_to_rgb(msg) if isinstance(msg, CompressedImage)
                   else messages.image_to_rgb(msg))
        except ValueError as error:
            self._reject("image", str(error))
            return
        height, width = rgb.shape[:2]
        info = self._pair_camera_info(msg.header.stamp)
        if info is not None:
            try:
                messages.check_camera_info(info)
                if (info.width, info.height) != (width, height):
                    raise ValueError(f"camera_info is {info.width}x{info.height} but the image is {width}x{height}")
            except ValueError as error:
                self._reject("camera_info", str(error))
                return
        fx = None
        if self._p("focal_scale_transfer"):
            if info is None:
                self._log_throttled("no_info", "no camera_info received: publishing depth without focal-length "
                                               "scale transfer, and no point cloud")
            else:
                fx = messages.intrinsics(info)[0]
        out_h, out_w = self._output_size(height, width)
        start = time.perf_counter()
        depth = self.estimator.predict(rgb, output_size=(out_h, out_w), fx=fx)
        inference_ms = (time.perf_counter() - start) * 1000.0
        depth[(depth < self._p("min_depth")) | (depth > self._p("max_depth"))] = np.nan
        header = msg.header
        listeners = self._listeners()
        self._pubs["depth"].publish(messages.depth_to_image(depth, header))
        latency = self._latency_since(header.stamp)
        scaled_info = messages.scale_camera_info(info, out_w, out_h, header) if info is not None else None
        if scaled_info is not None:
            self._pubs["info"].publish(scaled_info)
        if self._p("publish_colored") and listeners["colored"]:
            colour = colorize_depth(depth, self._p("colored_min_depth"), self._p("colored_max_depth"),
                                    self._p("colormap"))
            self._pubs["colored"].publish(messages.rgb_to_image(colour, header))
        points_latency = None
        if self._p("publish_points") and listeners["points"] and scaled_info is not None:
            stride = int(self._p("points_stride"))
            fx_o, fy_o, cx_o, cy_o = messages.intrinsics(scaled_info)
            points = depth_to_points(depth, fx_o, fy_o, cx_o, cy_o, stride)
            colour = None
            if self._p("points_rgb"):
                import cv2

                if (out_h, out_w) != (height, width):
                    rgb = cv2.resize(rgb, (out_w, out_h), interpolation=cv2.INTER_AREA)
                colour = rgb[::stride, ::stride]
            self._pubs["points"].publish(messages.points_to_cloud(points, header, colour))
            points_latency = self._latency_since(header.stamp)
        with self._stats_lock:
            self._counts["published"] += 1
            self._out_rate.tick(time.monotonic())
            self._inference_ms.append(inference_ms)
            self._latency_ms.append(latency)
            if points_latency is not None:
                self._points_latency_ms.append(points_latency)

    def _latency_since(self, stamp) -> float:
        now = self.get_clock().now().nanoseconds
        return (now - (stamp.sec * 1_000_000_000 + stamp.nanosec)) / 1e6

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        with self._stats_lock:
            counts = dict(self._counts)
            latency = list(self._latency_ms)
            points_latency = list(self._points_latency_ms)
            inference = list(self._inference_ms)
            last_rejection = self._last_rejection
            out_hz = self._out_rate.hz(now)
        in_hz = self._in_rate.hz(now)

        def median(values):
            return f"{statistics.median(values):.1f}" if values else "n/a"

        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: depth", hardware_id="space_clip_ros")
        est = self.estimator
        if est is None:
            status.level, status.message = DiagnosticStatus.ERROR, self._status
        elif not est.trained:
            status.level, status.message = DiagnosticStatus.WARN, f"{self._status}; UNTRAINED model"
        elif counts.get("rejected", 0):
            status.level, status.message = DiagnosticStatus.WARN, f"{self._status}; rejected inputs"
        else:
            status.level, status.message = DiagnosticStatus.OK, self._status
        values = {
            "state": self._status,
            "input_rate_hz": f"{in_hz:.2f}",
            "output_rate_hz": f"{out_hz:.2f}",
            "latency_ms_median": median(latency),
            "points_latency_ms_median": median(points_latency),
            "inference_ms_median": median(inference),
            "frames_published": str(counts.get("published", 0)),
            "frames_dropped": str(counts.get("dropped", 0)),
            "frames_idle_no_subscribers": str(counts.get("idle_no_subscribers", 0)),
            "rejected_total": str(counts.get("rejected", 0)),
            "rejected_image": str(counts.get("rejected_image", 0)),
            "rejected_camera_info": str(counts.get("rejected_camera_info", 0)),
            "rejected_frame": str(counts.get("rejected_frame", 0)),
            "camera_info_unmatched": str(counts.get("camera_info_unmatched", 0)),
            "last_rejection": last_rejection,
            "device": str(est.device) if est else "",
            "precision": str(self._p("precision")),
            "backend": est.backend_name if est else "",
            "model": ("trained" if est.trained else "UNTRAINED") if est else "not loaded",
        }
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)


def main(args=None) -> None:
    """Console script ``depth_node``: ``depth_node --ros-args -p checkpoint:=PATH -p device:=cpu -r __ns:=/camera``."""
    use_shipped_fastdds_profile()
    rclpy.init(args=args)
    node = DepthNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._stop_worker()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
