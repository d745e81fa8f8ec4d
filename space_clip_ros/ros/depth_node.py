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
import threading
import time
from typing import Any, Deque, Dict, Optional, Tuple

import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from ..outputs import cloud_buffer, colorize, mask_range, resize_rgb
from . import fastdds, messages
from .settings import PARAMETERS, NodeSettings, runtime_change_refusal
from .stats import FrameStats

LOG_THROTTLE_S = 5.0


def fastdds_profile_path() -> str:
    """The shipped Fast DDS profile (see :mod:`space_clip_ros.ros.fastdds`)."""
    return fastdds.profile_path()


def use_shipped_fastdds_profile() -> None:
    """Point Fast DDS at the shipped profile unless the user chose one (see :mod:`space_clip_ros.ros.fastdds`)."""
    fastdds.use_shipped_profile()


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
        #: Validated parameters, read in on_configure; None while unconfigured. Replaced whole on a valid change.
        self.settings: Optional[NodeSettings] = None
        self._pubs: Dict[str, Any] = {}
        self._subs: list = []
        self._infos: Deque[CameraInfo] = collections.deque(maxlen=max(1, int(self._p("camera_info_cache"))))
        self._cond = threading.Condition()
        self._pending: Optional[Tuple[Any, float]] = None
        self._worker: Optional[threading.Thread] = None
        self._running = False
        self.stats = FrameStats()
        self._last_log: Dict[str, float] = {}
        self._status = "unconfigured"
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        period = float(self._p("diagnostics_period"))
        self._diag_timer = self.create_timer(period if period > 0 else 1.0, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)
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
        self.stats.reject(kind, reason)
        self._log_throttled(f"reject_{kind}", f"rejected {kind}: {reason} (counted in diagnostics; node continues)")

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        from ..estimator import DepthEstimator

        try:
            self.settings = settings = NodeSettings.from_values({name: self._p(name) for name in PARAMETERS})
            if settings.untrained_demo:
                from ..model.untrained import build_untrained_model

                model = build_untrained_model()
                self.get_logger().warn("UNTRAINED demo model (random weights, explicitly requested with "
                                       "untrained_demo:=true): its depth is meaningless")
            elif not settings.checkpoint:
                raise ValueError("no checkpoint: set -p checkpoint:=/path/to/space_clip.pt (a trained decoder; "
                                 "see space-clip-convert), or -p untrained_demo:=true to run with random weights")
            else:
                model = settings.checkpoint
            self.estimator = DepthEstimator(model, device=settings.device, precision=settings.precision,
                                            backbone=settings.backbone or None, backend=settings.backend)
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
            f"{self.estimator.device} in {settings.precision}, backend {self.estimator.backend_name} "
            f"({self.estimator.backend_reason})")
        return TransitionCallbackReturn.SUCCESS

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Runtime changes: refused with the reason when invalid or when they need a reload / re-subscription (the
        node keeps its working values); applied at the next frame otherwise."""
        changes = {p.name: p.value for p in params if p.name in PARAMETERS}
        if not changes:
            return SetParametersResult(successful=True)
        current = self.settings
        configured, active = current is not None, self._running
        for name, value in changes.items():
            unchanged = current is not None and getattr(current, name) == value
            reason = None if unchanged else runtime_change_refusal(name, configured, active)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        try:
            if current is None:  # unconfigured: check now, read at configure
                NodeSettings.from_values({**{n: self._p(n) for n in PARAMETERS}, **changes})
                return SetParametersResult(successful=True)
            updated = current.replace(**changes)
        except (ValueError, TypeError) as error:
            return SetParametersResult(successful=False, reason=str(error))
        if updated.camera_info_cache != current.camera_info_cache:
            self._infos = collections.deque(self._infos, maxlen=updated.camera_info_cache)
        self.settings = updated
        self.get_logger().info("parameters changed: " + ", ".join(f"{k}={v!r}" for k, v in changes.items()))
        return SetParametersResult(successful=True)

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        overrides = QoSOverridingOptions.with_default_policies()
        if self.settings.input_transport == "compressed":
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
        self.settings = None
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
        self.stats.frame_in(now)
        if not any(self._listeners().values()):
            self.stats.count("idle_no_subscribers")
            return
        with self._cond:
            if self._pending is not None:
                self.stats.count("dropped")
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
        self.stats.count("camera_info_unmatched")
        return latest

    def _output_size(self, settings: NodeSettings, height: int, width: int) -> Tuple[int, int]:
        mode = settings.output_size.strip().lower()
        if mode == "input":
            return height, width
        if mode == "model":
            return tuple(self.estimator.model.preprocessing.output_size)  # type: ignore[return-value]
        return settings.fixed_output_size  # type: ignore[return-value]

    def _process(self, msg: Any) -> None:
        settings = self.settings  # one consistent set of values for this frame
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
        if settings.focal_scale_transfer:
            if info is None:
                self._log_throttled("no_info", "no camera_info received: publishing depth without focal-length "
                                               "scale transfer, and no point cloud")
            else:
                fx = messages.intrinsics(info)[0]
        out_h, out_w = self._output_size(settings, height, width)
        scales = None if fx is None else [self.estimator.focal_scale(fx, width)]
        header = msg.header
        with torch.inference_mode():  # every output is computed on the model's device; one download each
            start = time.perf_counter()
            depth_t = self.estimator.predict_tensor([rgb], [(out_h, out_w)], scales)[0]
            mask_range(depth_t, settings.min_depth, settings.max_depth)
            depth = depth_t.cpu().numpy()
            inference_ms = (time.perf_counter() - start) * 1000.0
            listeners = self._listeners()
            self._pubs["depth"].publish(messages.depth_to_image(depth, header))
            latency = self._latency_since(header.stamp)
            scaled_info = messages.scale_camera_info(info, out_w, out_h, header) if info is not None else None
            if scaled_info is not None:
                self._pubs["info"].publish(scaled_info)
            if settings.publish_colored and listeners["colored"]:
                colour = colorize(depth_t, settings.colored_min_depth, settings.colored_max_depth, settings.colormap)
                self._pubs["colored"].publish(messages.rgb_to_image(colour.cpu().numpy(), header))
            points_latency = None
            if settings.publish_points and listeners["points"] and scaled_info is not None:
                stride = int(settings.points_stride)
                colour_t = None
                if settings.points_rgb:
                    image = torch.from_numpy(rgb).to(depth_t.device, non_blocking=True)
                    colour_t = resize_rgb(image, (out_h, out_w))[::stride, ::stride]
                buffer = cloud_buffer(depth_t, *messages.intrinsics(scaled_info), stride, colour_t)
                self._pubs["points"].publish(messages.cloud_message(buffer.cpu().numpy(), header))
                points_latency = self._latency_since(header.stamp)
        self.stats.published(time.monotonic(), inference_ms, latency, points_latency)

    def _latency_since(self, stamp) -> float:
        now = self.get_clock().now().nanoseconds
        return (now - (stamp.sec * 1_000_000_000 + stamp.nanosec)) / 1e6

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        counts = self.stats.counts()
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
        values = {"state": self._status, **self.stats.values(now)}
        values.update({
            "device": str(est.device) if est else "",
            "precision": str(self._p("precision")),
            "backend": est.backend_name if est else "",
            "model": ("trained" if est.trained else "UNTRAINED") if est else "not loaded",
        })
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
