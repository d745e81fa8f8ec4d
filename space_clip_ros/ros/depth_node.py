"""depth_node: camera images in; REP 118 depth, scaled camera_info, clouds, a LaserScan and a coloured depth out.

ROS glue (lifecycle, parameters, subscriptions, publishing) over tested ROS-free parts: per-camera state
(:mod:`.camera_state`), the frame path (:mod:`.frame_pipeline`: model, range mask, clouds, scan, colour on the
model's device), diagnostics (:mod:`.diagnostics`), parameters (:mod:`.settings`), the image subscription's
reliability (:mod:`.image_subscription`) and rclpy workarounds (:mod:`.rclpy_compat`). Topics are relative (remap
them at launch):

    in:  image (sensor_msgs/Image) or image/compressed (input_transport: compressed), camera_info;
         with scale_reference: scale_reference/points (PointCloud2) or scale_reference/depth (Image) +
         scale_reference/camera_info; with a reference or temporal_filter: /tf, /tf_static
    out: depth/image (32FC1 m, NaN unknown), depth/camera_info, depth/points, depth/points_filtered,
         depth/scan (sensor_msgs/LaserScan), depth/colored (rgb8), depth/confidence (32FC1 0..1), /diagnostics

With ``cameras: [front, left]`` every topic above is per camera (``front/image``, ``front/depth/image``, ...), and the
latest frame of every camera that has one goes through one batched forward of the one model. Latest frame only: a
newer frame replaces a waiting one (counted as dropped), so latency does not grow when cameras outrun the model.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any, Dict, List, Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, Image, LaserScan, PointCloud2

from ..alignment import ScaleAligner
from ..device import precision_name, release_memory
from ..stamps import stamp_ns
from ..temporal import TemporalFusion
from ..tf_tree import TfTree
from . import fastdds
from .camera_state import CameraState, LatestSlot
from .descriptors import declare_all
from .diagnostics import camera_status, model_values
from .frame_pipeline import FramePipeline
from .image_subscription import ImageSubscription, sensor_qos
from .intake import Rejected, take_frame
from .log_bridge import bridge_package_logs, unbridge
from .outgoing import output_messages
from .rclpy_compat import guard_change_state, init_without_signal_handlers, spin_until, stop_on_signals
from .reference import REFERENCE_TOPICS, ReferenceQueue, ReferenceRefused, prepare_frame
from .settings import PARAMETERS, SPECS, NodeSettings, apply_changes
from .tf_listener import TF_CACHE_S, subscribe_tf

LOG_THROTTLE_S = 5.0
#: How often each image subscription checks its publishers' reliability (image_reliability auto).
FOLLOW_PERIOD_S = 0.5
#: key, type, relative topic of every output; all but depth and info are computed only while subscribed.
OUTPUTS = (("depth", Image, "depth/image"), ("info", CameraInfo, "depth/camera_info"),
           ("points", PointCloud2, "depth/points"), ("points_filtered", PointCloud2, "depth/points_filtered"),
           ("scan", LaserScan, "depth/scan"), ("colored", Image, "depth/colored"),
           ("confidence", Image, "depth/confidence"))


class DepthNode(LifecycleNode):
    """Lifecycle node: configure loads the model and creates the publishers (and fails cleanly), activate
    subscribes. With ``cameras`` set, every camera's latest frame goes through one batched forward of one model."""

    def __init__(self, node_name: str = "depth_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        guard_change_state(self)
        self._log_bridge = bridge_package_logs(self.get_logger())
        #: Values given at start that their descriptor refused (configure fails with them).
        self._refused_at_start = declare_all(self, SPECS)
        self.estimator = None
        self.pipeline: Optional[FramePipeline] = None
        #: Validated parameters, read in on_configure; None while unconfigured. Replaced whole on a valid change.
        self.settings: Optional[NodeSettings] = None
        self.cameras: List[CameraState] = []
        self._pubs: Dict[str, Dict[str, Any]] = {}  # camera name -> output key -> publisher
        self._subs: Dict[str, List[Any]] = {}  # camera name -> camera_info subscription
        self._images: Dict[str, ImageSubscription] = {}
        self.tf = TfTree(TF_CACHE_S)
        self._tf_subs: List[Any] = []
        self._tf_problem = "not used (no scale_reference, temporal_filter off)"
        self._slot = LatestSlot()
        self._worker: Optional[threading.Thread] = None
        self._last_log: Dict[str, float] = {}
        self._status = "unconfigured"
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        period = float(self.get_parameter("diagnostics_period").value)
        self._diag_timer = self.create_timer(period if period > 0 else 1.0, self._publish_diagnostics)
        self._follow_timer = self.create_timer(FOLLOW_PERIOD_S, self._follow_publishers)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if self.get_parameter("autostart").value:
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()

    def _values(self) -> Dict[str, Any]:
        values = {name: self.get_parameter(name).value for name in PARAMETERS}
        return {**values, "cameras": values["cameras"] or []}

    def _log_throttled(self, key: str, text: str, level: str = "warn") -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, -1e9) >= LOG_THROTTLE_S:
            self._last_log[key] = now
            logger = self.get_logger()  # one call per severity: rclpy refuses a severity change at one call site
            if level == "info":
                logger.info(text)
            else:
                logger.warning(text)

    def _reject(self, camera: CameraState, kind: str, message: str, reason: str = "other") -> None:
        camera.stats.reject(kind, message, reason)
        where = f" on camera '{camera.name}'" if camera.name else ""
        self._log_throttled(f"reject_{camera.name}_{kind}_{reason}", f"rejected {kind}{where} ({reason}): {message} "
                            f"(counted in diagnostics as rejected.{reason}; node continues)")

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            if self._refused_at_start:
                raise ValueError("; ".join(self._refused_at_start))
            self.settings = settings = NodeSettings.from_values(self._values())
            if settings.untrained_demo:
                self.get_logger().warn("UNTRAINED demo model (random weights, explicitly requested with "
                                       "untrained_demo:=true): its depth is meaningless")
            self.pipeline = FramePipeline.from_settings(settings)
            self.estimator = self.pipeline.estimator
            release_memory()  # what loading the checkpoint left behind
            overrides = QoSOverridingOptions.with_default_policies()
            self.cameras = [CameraState(name, settings.camera_info_cache) for name in (settings.cameras or [""])]
            for camera in self.cameras:  # reliable, depth 5; a new profile per publisher (REP 2003 edits it)
                self._pubs[camera.name] = {
                    key: self.create_publisher(msg_type, camera.topic(topic),
                                               QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE),
                                               qos_overriding_options=overrides)
                    for key, msg_type, topic in OUTPUTS}
        except Exception as error:  # a bad checkpoint, device or qos_overrides.* value: unconfigured, reason logged
            self.on_cleanup(state)
            self._status = f"configure failed: {error}"
            self.get_logger().error(f"configure failed: {error}")
            return TransitionCallbackReturn.FAILURE
        self._status = "configured"
        cameras = f", cameras {list(settings.cameras)}" if settings.cameras else ""
        self.get_logger().info(
            f"model loaded ({'trained' if self.estimator.trained else 'UNTRAINED'}, "
            f"{self.estimator.model.provenance.get('source', '?')}) on {self.estimator.device} in "
            f"{precision_name(self.estimator.dtype)} (precision {settings.precision}), backend "
            f"{self.estimator.backend_name} ({self.estimator.backend_reason}){cameras}")
        return TransitionCallbackReturn.SUCCESS

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Runtime changes: refused with the reason when invalid or when they need a reload / re-subscription (the
        node keeps its working values); applied at the next frame otherwise."""
        changes = {p.name: p.value for p in params if p.name in PARAMETERS}
        if not changes:
            return SetParametersResult(successful=True)
        updated, reason = apply_changes(self.settings, self._values(), changes, self._slot.running)
        if updated is None:
            return SetParametersResult(successful=reason is None, reason=reason or "")
        for camera in self.cameras:
            camera.resize_cache(updated.camera_info_cache)
        self.settings = updated
        self.get_logger().info("parameters changed: " + ", ".join(f"{k}={v!r}" for k, v in changes.items()))
        return SetParametersResult(successful=True)

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        overrides = QoSOverridingOptions.with_default_policies()
        compressed = self.settings.input_transport == "compressed"
        for camera in self.cameras:
            camera.order.forget()  # a new activation: no ordering against frames of before
            self._images[camera.name] = ImageSubscription(
                self, camera.topic("image/compressed" if compressed else "image"), compressed,
                self.settings.image_reliability, lambda msg, c=camera: self._on_image(c, msg), camera.delivery.seen)
            self._subs[camera.name] = [self.create_subscription(
                CameraInfo, camera.topic("camera_info"), lambda msg, c=camera: c.saw_info(msg, time.monotonic()),
                sensor_qos(), qos_overriding_options=overrides)]
            self._subs[camera.name] += self._subscribe_refinements(camera, overrides)
        if self.settings.uses_tf:
            self.tf = TfTree(TF_CACHE_S)
            self._tf_subs, self._tf_problem = subscribe_tf(self, self.tf)
            if self._tf_problem:
                self.get_logger().error(f"no tf: {self._tf_problem}; scale references in other frames and temporal "
                                        "fusion cannot work")
        self._slot.start()
        self._worker = threading.Thread(target=self._work, name="space_clip_inference", daemon=True)
        self._worker.start()
        self._status = "active"
        topics = ", ".join(f"{s.topic} ({s.reliability})" for s in self._images.values())
        info = ", ".join(sub.topic_name for subs in self._subs.values() for sub in subs)
        self.get_logger().info(f"active: subscribed to {topics}, {info}")
        return TransitionCallbackReturn.SUCCESS

    def _subscribe_refinements(self, camera: CameraState, overrides) -> List[Any]:
        """The camera's scale reference subscriptions and its aligner and fusion state, as the settings ask."""
        settings, subs = self.settings, []
        camera.aligner = camera.fusion = camera.reference = camera.last_fit = None
        if settings.scale_reference:
            camera.reference = ReferenceQueue(settings.scale_reference)
            camera.aligner = ScaleAligner()
            msg_type = PointCloud2 if settings.scale_reference == "points" else Image
            subs.append(self.create_subscription(
                msg_type, camera.topic(REFERENCE_TOPICS[settings.scale_reference]),
                lambda msg, c=camera: self._on_reference(c, msg), sensor_qos(), qos_overriding_options=overrides))
            if settings.scale_reference == "depth":
                subs.append(self.create_subscription(
                    CameraInfo, camera.topic("scale_reference/camera_info"),
                    lambda msg, c=camera: c.reference.add_info(msg), sensor_qos(),
                    qos_overriding_options=overrides))
        if settings.temporal_filter != "off":
            camera.fusion = TemporalFusion(settings.temporal_gate, settings.temporal_max_frames)
        return subs

    def _on_reference(self, camera: CameraState, msg: Any) -> None:
        try:
            camera.reference.add(msg)
        except ReferenceRefused as refused:
            self._reject(camera, "scale_reference", str(refused), refused.reason)

    def _follow_publishers(self) -> None:
        """image_reliability auto: each image subscription follows its publishers (see :mod:`.image_subscription`)."""
        for image in list(self._images.values()):
            switched = image.follow()
            if switched:
                self.get_logger().info(f"image subscription {image.topic} is now {switched}: "
                                       + ("every publisher is reliable, so lost fragments are sent again"
                                          if switched == "reliable" else "a best-effort publisher is on the topic"))

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop_worker()
        for image in self._images.values():
            image.destroy()
        for sub in [s for subs in self._subs.values() for s in subs] + self._tf_subs:
            self.destroy_subscription(sub)
        self._images.clear()
        self._subs.clear()
        self._tf_subs = []
        self._slot.clear(self.cameras)
        self._status = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        for pub in (p for pubs in self._pubs.values() for p in pubs.values()):
            self.destroy_publisher(pub)
        self._pubs.clear()
        self.cameras, self.estimator, self.pipeline, self.settings = [], None, None, None
        self._status = "unconfigured"
        release_memory()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._stop_worker()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        unbridge(self._log_bridge)
        super().destroy_node()

    def _stop_worker(self) -> None:
        self._slot.stop()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=10.0)
        self._worker = None

    # ------------------------------------------------------------------ frames
    def _listeners(self, camera: CameraState) -> Dict[str, int]:
        return {key: pub.get_subscription_count() for key, pub in self._pubs.get(camera.name, {}).items()}

    def _on_image(self, camera: CameraState, msg: Any) -> None:
        camera.stats.frame_in(time.monotonic())
        camera.delivery.saw_image(stamp_ns(msg.header.stamp))
        if not any(self._listeners(camera).values()):
            camera.stats.count("idle_no_subscribers")
            return
        self._slot.put(camera, msg)

    def _work(self) -> None:
        while True:
            batch = self._slot.take(self.cameras)
            if batch is None:
                return
            try:
                self._process(batch)
            except Exception as error:  # a bug must not kill the worker: log it, count it, keep going
                for camera, _ in batch:
                    self._reject(camera, "frame", f"internal error {type(error).__name__}: {error}",
                                 "internal_error")

    def _process(self, batch) -> None:
        settings = self.settings  # one consistent set of values for this batch
        taken = []
        for camera, msg in batch:
            try:
                intake = take_frame(settings, camera, msg, self.estimator, self._listeners(camera))
            except Rejected as error:
                self._reject(camera, error.kind, str(error), error.reason)
                continue
            for key, text, level in intake.notes:
                self._log_throttled(key, text, level)
            if camera.aligner is not None or camera.fusion is not None:  # reference and pose after the forward
                intake.request.prepare = functools.partial(prepare_frame, camera=camera, settings=settings,
                                                           tree=self.tf, frame_id=msg.header.frame_id)
            taken.append((camera, msg.header, intake))
        if not taken:
            return
        results, inference_ms = self.pipeline.run([intake.request for _, _, intake in taken], settings)
        for (camera, header, intake), result in zip(taken, results, strict=True):
            stamp, previous = stamp_ns(header.stamp), camera.last_published_ns
            scan_time = (stamp - previous) / 1e9 if previous is not None and stamp > previous else 0.0
            pubs, latencies = self._pubs[camera.name], {}
            for key, msg in output_messages(result, header, intake.info, settings, scan_time).items():
                pubs[key].publish(msg)
                latencies[key] = self._latency_since(header.stamp)
            for output, problem in result.problems.items():
                if problem != "no camera_info":
                    camera.stats.count(f"{output}_skipped")
                    self._log_throttled(f"skip_{camera.name}_{output}", f"depth/{output} not published: {problem}")
            camera.last_published_ns = stamp
            if result.alignment is not None:
                camera.last_fit = result.alignment
            camera.stats.published(time.monotonic(), inference_ms, latencies["depth"], latencies.get("points"),
                                   len(taken))

    def _latency_since(self, stamp) -> float:
        return (self.get_clock().now().nanoseconds - stamp_ns(stamp)) / 1e6

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        """One status per camera (``<node>: depth``, or ``<node>: depth <camera>``); before configure one status."""
        now = time.monotonic()
        model = model_values(self.estimator, self.get_parameter("precision").value)
        statuses = []
        for camera in self.cameras or [CameraState("", 1)]:
            image = self._images.get(camera.name)
            subscription = image.values() if image is not None else {"image_reliability": "n/a"}
            subscription.update({f"subscribers.{k}": str(n) for k, n in self._listeners(camera).items()})
            if self.settings is not None and self.settings.uses_tf:
                subscription["tf"] = self._tf_problem or f"{self.tf.received} transforms received"
            status = camera_status(self.get_fully_qualified_name(), self._status, self.estimator, camera, now, model,
                                   subscription)
            statuses.append(DiagnosticStatus(
                name=status.name, hardware_id="space_clip_ros", level=bytes([status.level]), message=status.message,
                values=[KeyValue(key=k, value=v) for k, v in status.values.items()]))
        array = DiagnosticArray(status=statuses)
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)


def main(args=None) -> None:
    """Console script ``depth_node``: ``depth_node --ros-args -p checkpoint:=PATH -p device:=cpu -r __ns:=/camera``."""
    fastdds.use_shipped_profile()
    init_without_signal_handlers(args)
    stop = stop_on_signals()  # before the node: configure and activate run in its constructor (autostart)
    node = DepthNode()
    spin_until(node, stop, node._stop_worker)


if __name__ == "__main__":
    main()
