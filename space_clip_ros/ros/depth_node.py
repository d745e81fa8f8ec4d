"""depth_node: camera images in; REP 118 depth, scaled camera_info, organized point clouds and a coloured depth out.

A thin lifecycle adapter over :class:`space_clip_ros.DepthEstimator` (the model) and
:mod:`space_clip_ros.outputs` (range mask, cloud and colour map as tensors on the model's device). Topics are
relative (remap them at launch):

    in:  image (sensor_msgs/Image) or image/compressed (input_transport: compressed), camera_info
    out: depth/image (32FC1 m, NaN unknown), depth/camera_info, depth/points, depth/colored (rgb8), /diagnostics

With ``cameras: [front, left]`` every topic above is per camera (``front/image``, ``front/depth/image``, ...), and the
latest frame of every camera that has one goes through one batched forward of the one model.

Latest frame only: while frames are in inference, a newer frame of a camera replaces its waiting one and the replaced
frame is counted as dropped, so latency does not grow when cameras are faster than the model.
"""

from __future__ import annotations

import collections
import functools
import signal
import threading
import time
from typing import Any, Deque, Dict, List, Optional, Tuple

import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSPolicyKind, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from ..outputs import cloud_buffer, colorize, mask_range, resize_rgb
from ..runtime import release_memory
from . import fastdds, messages
from .settings import PARAMETERS, NodeSettings, runtime_change_refusal
from .stats import FrameStats

LOG_THROTTLE_S = 5.0
#: Frames smaller than this on a side are refused (the model sees 224x224; a 1x1 "image" is a broken driver).
MIN_SIDE = 16
#: A stamp this far behind the last processed one is a time reset (a bag loop, a simulator restart), not disorder.
STAMP_RESET_NS = 3_000_000_000
#: A camera_info older than this without its image counts as an image lost on the way (delivery estimate).
DELIVERY_WAIT_S = 1.0
#: When the image subscription switches reliability, the old one is destroyed once the new one matched, or after this.
RETIRE_S = 5.0
DELIVERY_WINDOW = 100


def _sensor_qos() -> QoSProfile:
    """rclpy's sensor-data profile, as a new object per subscription: REP 2003 overrides (qos_overrides.*) are
    applied to the profile in place, so a shared one would carry one topic's override to every other."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def _publisher_qos() -> QoSProfile:
    """Reliable, depth 5, a new object per publisher (see _sensor_qos)."""
    return QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)


class _Camera:
    """One camera: its topics (``N/...``, or the plain relative names for the single unnamed camera), the latest
    frame waiting for inference, its camera_info cache and its statistics."""

    OUTPUTS = (("depth", Image, "depth/image"), ("info", CameraInfo, "depth/camera_info"),
               ("points", PointCloud2, "depth/points"), ("colored", Image, "depth/colored"))

    def __init__(self, name: str, cache: int) -> None:
        self.name = name
        self.pubs: Dict[str, Any] = {}
        self.subs: List[Any] = []
        self.infos: Deque[CameraInfo] = collections.deque(maxlen=cache)
        self.pending: Optional[Any] = None
        self.last_stamp: Optional[int] = None  # of the last processed frame, nanoseconds
        self.stats = FrameStats()
        self.image_sub: Optional[Any] = None
        self.retiring: Optional[Tuple[Any, float]] = None  # the previous image subscription, kept until the new matches
        self.image_reliability = ""  # what the image subscription uses now
        self.image_auto = False  # image_reliability auto and no REP 2003 override: follows the publishers
        # Delivery estimate: camera_info stamps (small messages, they arrive) against the image stamps that came.
        self.image_stamps: Deque[int] = collections.deque(maxlen=4 * DELIVERY_WINDOW)
        self.image_stamp_set: set = set()
        self.info_arrivals: Deque[Tuple[int, float]] = collections.deque(maxlen=4 * DELIVERY_WINDOW)
        self.delivery: Deque[bool] = collections.deque(maxlen=DELIVERY_WINDOW)
        self.images_missing = 0

    def saw_image(self, key: int) -> None:
        """An image with stamp ``key`` (ns) arrived."""
        if len(self.image_stamps) == self.image_stamps.maxlen:
            self.image_stamp_set.discard(self.image_stamps[0])
        self.image_stamps.append(key)
        self.image_stamp_set.add(key)

    def saw_info(self, msg: CameraInfo, now: float) -> None:
        self.infos.append(msg)
        self.info_arrivals.append((messages.stamp_ns(msg.header.stamp), now))

    def settle_delivery(self, now: float) -> None:
        """camera_info messages older than DELIVERY_WAIT_S: was their image received?"""
        while self.info_arrivals and now - self.info_arrivals[0][1] >= DELIVERY_WAIT_S:
            key, _ = self.info_arrivals.popleft()
            arrived = key in self.image_stamp_set
            self.delivery.append(arrived)
            self.images_missing += not arrived

    def delivery_values(self) -> Dict[str, str]:
        if not self.delivery:
            return {"image_delivery": "n/a (needs camera_info)"}
        return {"image_delivery": f"{sum(self.delivery) / len(self.delivery):.2f}",
                "images_missing": str(self.images_missing)}

    def topic(self, relative: str) -> str:
        return f"{self.name}/{relative}" if self.name else relative

    def listeners(self) -> Dict[str, int]:
        return {key: pub.get_subscription_count() for key, pub in self.pubs.items()}


class _Frame:
    """A decoded frame on its way through one batched forward."""

    def __init__(self, camera: _Camera, header, rgb, info, scale: float, size: Tuple[int, int]) -> None:
        self.camera, self.header, self.rgb, self.info, self.scale, self.size = camera, header, rgb, info, scale, size


class DepthNode(LifecycleNode):
    """Lifecycle node: configure loads the model and creates the publishers (and fails cleanly), activate
    subscribes. With ``cameras`` set, every camera's latest frame goes through one batched forward of one model."""

    def __init__(self, node_name: str = "depth_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._guard_change_state()
        for name, default in PARAMETERS.items():
            if name == "cameras":  # an empty list has no type of its own; NodeSettings checks the value
                self.declare_parameter(name, default, ParameterDescriptor(dynamic_typing=True))
            else:
                self.declare_parameter(name, default)
        self.estimator = None
        #: Validated parameters, read in on_configure; None while unconfigured. Replaced whole on a valid change.
        self.settings: Optional[NodeSettings] = None
        self.cameras: List[_Camera] = []
        self._cond = threading.Condition()
        self._worker: Optional[threading.Thread] = None
        self._running = False
        self._last_log: Dict[str, float] = {}
        self._status = "unconfigured"
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        period = float(self._p("diagnostics_period"))
        self._diag_timer = self.create_timer(period if period > 0 else 1.0, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if self._p("autostart"):
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()

    def _guard_change_state(self) -> None:
        """A change_state request for a transition the current state does not have (``ros2 lifecycle set`` twice, a
        client that asks again) makes rclpy's LifecycleNode raise inside the service callback, which ends the
        process. Refuse it instead: success false and a warning naming the state; the node keeps running."""
        service = getattr(self, "_service_change_state", None)
        if service is None:
            return
        handle = service.callback

        def guarded(request, response):
            try:
                return handle(request, response)
            except Exception as error:  # rclpy's RCLError: "Transition is not registered"
                if "ransition" not in str(error):
                    raise
                state = self._state_machine.current_state[1]
                self.get_logger().warning(
                    f"refused lifecycle transition {request.transition.id} '{request.transition.label}' in state "
                    f"'{state}': not a transition of that state (ros2 lifecycle list {self.get_name()} lists them)")
                response.success = False
                return response

        service.callback = guarded

    # ------------------------------------------------------------------ helpers
    def _p(self, name: str) -> Any:
        value = self.get_parameter(name).value
        return [] if name == "cameras" and value is None else value

    def _values(self) -> Dict[str, Any]:
        return {name: self._p(name) for name in PARAMETERS}

    def _log_throttled(self, key: str, text: str, level: str = "warn") -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, -1e9) >= LOG_THROTTLE_S:
            self._last_log[key] = now
            logger = self.get_logger()  # one call per severity: rclpy refuses a severity change at one call site
            if level == "info":
                logger.info(text)
            elif level == "error":
                logger.error(text)
            else:
                logger.warning(text)

    def _reject(self, camera: _Camera, kind: str, message: str, reason: str = "other") -> None:
        camera.stats.reject(kind, message, reason)
        where = f" on camera '{camera.name}'" if camera.name else ""
        self._log_throttled(f"reject_{camera.name}_{kind}_{reason}", f"rejected {kind}{where} ({reason}): {message} "
                            f"(counted in diagnostics as rejected.{reason}; node continues)")

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        from ..estimator import DepthEstimator

        try:
            self.settings = settings = NodeSettings.from_values(self._values())
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
            # The node owns the model: an ONNX runtime backend's torch copy is freed once the runtime has it.
            self.estimator = DepthEstimator(model, device=settings.device, precision=settings.precision,
                                            backbone=settings.backbone or None, backend=settings.backend,
                                            release_weights=True)
            self.estimator.warmup()  # compile / allocate now, not on the first frame
            release_memory()  # what loading the checkpoint left behind
            overrides = QoSOverridingOptions.with_default_policies()
            self.cameras = [_Camera(name, settings.camera_info_cache) for name in (settings.cameras or [""])]
            for camera in self.cameras:
                for key, msg_type, topic in _Camera.OUTPUTS:
                    camera.pubs[key] = self.create_publisher(msg_type, camera.topic(topic), _publisher_qos(),
                                                             qos_overriding_options=overrides)
        except Exception as error:  # a bad checkpoint, device or qos_overrides.* value: unconfigured, reason logged
            self.on_cleanup(state)
            self._status = f"configure failed: {error}"
            self.get_logger().error(f"configure failed: {error}")
            return TransitionCallbackReturn.FAILURE
        trained = "trained" if self.estimator.trained else "UNTRAINED"
        self._status = "configured"
        cameras = f", cameras {list(settings.cameras)}" if settings.cameras else ""
        self.get_logger().info(
            f"model loaded ({trained}, {self.estimator.model.provenance.get('source', '?')}) on "
            f"{self.estimator.device} in {settings.precision}, backend {self.estimator.backend_name} "
            f"({self.estimator.backend_reason}){cameras}")
        return TransitionCallbackReturn.SUCCESS

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Runtime changes: refused with the reason when invalid or when they need a reload / re-subscription (the
        node keeps its working values); applied at the next frame otherwise."""
        changes = {p.name: p.value for p in params if p.name in PARAMETERS}
        if "cameras" in changes and changes["cameras"] is None:
            changes["cameras"] = []
        if not changes:
            return SetParametersResult(successful=True)
        current = self.settings
        configured, active = current is not None, self._running
        for name, value in changes.items():
            unchanged = current is not None and getattr(current, name) == (
                tuple(value) if name == "cameras" else value)
            reason = None if unchanged else runtime_change_refusal(name, configured, active)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        try:
            if current is None:  # unconfigured: check now, read at configure
                NodeSettings.from_values({**self._values(), **changes})
                return SetParametersResult(successful=True)
            updated = current.replace(**changes)
        except (ValueError, TypeError) as error:
            return SetParametersResult(successful=False, reason=str(error))
        if updated.camera_info_cache != current.camera_info_cache:
            for camera in self.cameras:
                camera.infos = collections.deque(camera.infos, maxlen=updated.camera_info_cache)
        self.settings = updated
        self.get_logger().info("parameters changed: " + ", ".join(f"{k}={v!r}" for k, v in changes.items()))
        return SetParametersResult(successful=True)

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        overrides = QoSOverridingOptions.with_default_policies()
        compressed = self.settings.input_transport == "compressed"
        for camera in self.cameras:
            camera.last_stamp = None  # a new activation: no ordering against frames of before
            self._subscribe_image(camera, compressed)
            camera.subs.append(self.create_subscription(
                CameraInfo, camera.topic("camera_info"), lambda msg, c=camera: c.saw_info(msg, time.monotonic()),
                _sensor_qos(), qos_overriding_options=overrides))
        self._running = True
        self._worker = threading.Thread(target=self._work, name="space_clip_inference", daemon=True)
        self._worker.start()
        self._status = "active"
        topics = ", ".join(f"{sub.topic_name}" + (f" ({c.image_reliability})" if sub is c.image_sub else "")
                           for c in self.cameras for sub in ([c.image_sub] + c.subs))
        self.get_logger().info(f"active: subscribed to {topics}")
        return TransitionCallbackReturn.SUCCESS

    def _subscribe_image(self, camera: _Camera, compressed: bool, reliability: Optional[str] = None) -> None:
        """(Re)create ``camera``'s image subscription. ``image_reliability`` reliable / best_effort: that, with the
        REP 2003 overrides; auto: reliable when every publisher of the topic is reliable (DDS then sends lost
        fragments of large frames again), else best effort (matches every publisher), unless a
        ``qos_overrides.<topic>.subscription.reliability`` parameter decides."""
        image_type, relative = (CompressedImage, "image/compressed") if compressed else (Image, "image")
        setting = self.settings.image_reliability
        if camera.image_sub is not None:  # a switch: the old one keeps delivering until the new one has matched
            self._retire(camera)
            camera.retiring = (camera.image_sub, time.monotonic() + RETIRE_S)
            camera.image_sub = None
        topic = self.resolve_topic_name(camera.topic(relative))
        overridden = f"qos_overrides.{topic}.subscription.reliability" in getattr(self, "_parameter_overrides", {})
        camera.image_auto = setting == "auto" and not overridden
        if reliability is None:
            reliability = setting if setting != "auto" else self._publishers_reliability(
                self.get_publishers_info_by_topic(topic))
        qos = _sensor_qos()
        qos.reliability = (ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT)
        # Under auto the node sets the reliability itself, so it is left out of the REP 2003 parameters (a declared
        # parameter would pin the first value); history and depth stay overridable.
        options = (QoSOverridingOptions(policy_kinds=(QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH))
                   if camera.image_auto else QoSOverridingOptions.with_default_policies())
        camera.image_sub = self.create_subscription(image_type, camera.topic(relative),
                                                    functools.partial(self._on_image, camera), qos,
                                                    qos_overriding_options=options)
        camera.image_reliability = ("reliable" if camera.image_sub.qos_profile.reliability
                                    == ReliabilityPolicy.RELIABLE else "best_effort")

    @staticmethod
    def _publishers_reliability(infos: List[Any]) -> str:
        """reliable when the topic has publishers (``get_publishers_info_by_topic``) and every one of them offers
        reliable delivery."""
        if infos and all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos):
            return "reliable"
        return "best_effort"

    def _retire(self, camera: _Camera) -> None:
        if camera.retiring is not None:
            self.destroy_subscription(camera.retiring[0])
            camera.retiring = None

    def _follow_publishers(self) -> None:
        """image_reliability auto: switch a camera's image subscription when its publishers call for the other
        reliability (a reliable driver appeared, or a best-effort one joined). The previous subscription stays until
        the new one has matched every publisher (or RETIRE_S), so no frame is lost in the switch."""
        if self._status != "active" or self.settings is None:
            return
        now = time.monotonic()
        for camera in self.cameras:
            if camera.image_sub is None:
                continue
            publishers = self.get_publishers_info_by_topic(camera.image_sub.topic_name)
            if camera.retiring is not None and (now > camera.retiring[1]
                                                or camera.image_sub.get_publisher_count() >= len(publishers)):
                self._retire(camera)
            if not camera.image_auto:
                continue
            wanted = self._publishers_reliability(publishers)
            if wanted != camera.image_reliability:
                self._subscribe_image(camera, self.settings.input_transport == "compressed", wanted)
                self.get_logger().info(f"image subscription {camera.image_sub.topic_name} is now {wanted}: "
                                       + ("every publisher is reliable, so lost fragments are sent again"
                                          if wanted == "reliable" else "a best-effort publisher is on the topic"))

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop_worker()
        for camera in self.cameras:
            for sub in camera.subs + ([camera.image_sub] if camera.image_sub is not None else []):
                self.destroy_subscription(sub)
            self._retire(camera)
            camera.subs.clear()
            camera.image_sub = None
            camera.pending = None
        self._status = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        for camera in self.cameras:
            for pub in camera.pubs.values():
                self.destroy_publisher(pub)
        self.cameras = []
        self.estimator = None
        self.settings = None
        self._status = "unconfigured"
        release_memory()
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
    def _on_image(self, camera: _Camera, msg: Any) -> None:
        key = messages.stamp_ns(msg.header.stamp)
        if camera.retiring is not None and key in camera.image_stamp_set:
            return  # the same frame through both subscriptions while the image subscription switches
        now = time.monotonic()
        camera.stats.frame_in(now)
        camera.saw_image(key)
        if not any(camera.listeners().values()):
            camera.stats.count("idle_no_subscribers")
            return
        with self._cond:
            if camera.pending is not None:
                camera.stats.count("dropped")
            camera.pending = msg
            self._cond.notify()

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._running and not any(c.pending is not None for c in self.cameras):
                    self._cond.wait(timeout=0.5)
                if not self._running:
                    return
                batch = [(camera, camera.pending) for camera in self.cameras if camera.pending is not None]
                for camera, _ in batch:
                    camera.pending = None
            try:
                self._process(batch)
            except Exception as error:  # a bug must not kill the worker: log it, count it, keep going
                for camera, _ in batch:
                    self._reject(camera, "frame", f"internal error {type(error).__name__}: {error}",
                                 "internal_error")

    # ------------------------------------------------------------------ the work
    def _pair_camera_info(self, camera: _Camera, stamp) -> Optional[CameraInfo]:
        infos = list(camera.infos)
        if not infos:
            return None
        for info in reversed(infos):
            if info.header.stamp.sec == stamp.sec and info.header.stamp.nanosec == stamp.nanosec:
                return info
        latest = infos[-1]
        self._log_throttled(f"info_stamp_{camera.name}", "no camera_info with the image's stamp; using the latest "
                            f"one (image {stamp.sec}.{stamp.nanosec:09d}, info "
                            f"{latest.header.stamp.sec}.{latest.header.stamp.nanosec:09d})")
        camera.stats.count("camera_info_unmatched")
        return latest

    def _output_size(self, settings: NodeSettings, height: int, width: int) -> Tuple[int, int]:
        mode = settings.output_size.strip().lower()
        if mode == "input":
            return height, width
        if mode == "model":
            return tuple(self.estimator.model.preprocessing.output_size)  # type: ignore[return-value]
        return settings.fixed_output_size  # type: ignore[return-value]

    def _decode(self, settings: NodeSettings, camera: _Camera, msg: Any) -> Optional[_Frame]:
        """Check and decode one camera's frame; None (rejected, counted by reason) when it cannot be used."""
        stamp = messages.stamp_ns(msg.header.stamp)
        if camera.last_stamp is not None and stamp < camera.last_stamp:
            if camera.last_stamp - stamp <= STAMP_RESET_NS:
                self._reject(camera, "image", f"stamp {messages.format_ns(stamp)} is older than the last processed "
                             f"frame's {messages.format_ns(camera.last_stamp)} (frames out of order)",
                             "stamp_backwards")
                return None
            self._log_throttled(f"time_reset_{camera.name}", f"time jumped back "
                                f"{(camera.last_stamp - stamp) / 1e9:.1f} s (a recording looping or a simulator "
                                "restarting?): taking it as a new start", "info")
        try:
            rgb = (messages.compressed_to_rgb(msg) if isinstance(msg, CompressedImage)
                   else messages.image_to_rgb(msg))
            if min(rgb.shape[:2]) < MIN_SIDE:
                raise messages.InputRejected("image_too_small", f"{rgb.shape[1]}x{rgb.shape[0]} image: at least "
                                             f"{MIN_SIDE} px on each side are needed")
        except messages.InputRejected as error:
            self._reject(camera, "image", str(error), error.reason)
            return None
        height, width = rgb.shape[:2]
        info = self._pair_camera_info(camera, msg.header.stamp)
        if info is not None:
            try:
                messages.check_camera_info(info)
                if (info.width, info.height) != (width, height):
                    raise messages.InputRejected("info_size_mismatch", f"camera_info is {info.width}x{info.height} "
                                                 f"but the image is {width}x{height}")
            except messages.InputRejected as error:
                self._reject(camera, "camera_info", str(error), error.reason)
                return None
        camera.last_stamp = stamp
        scale = 1.0
        if settings.focal_scale_transfer:
            if info is None:
                self._log_throttled(f"no_info_{camera.name}", "no camera_info received: publishing depth without "
                                    "focal-length scale transfer, and no point cloud")
            else:
                scale = self.estimator.focal_scale(messages.intrinsics(info)[0], width)
        return _Frame(camera, msg.header, rgb, info, scale, self._output_size(settings, height, width))

    def _process(self, batch: List[Tuple[_Camera, Any]]) -> None:
        settings = self.settings  # one consistent set of values for this batch
        frames = [f for f in (self._decode(settings, camera, msg) for camera, msg in batch) if f is not None]
        if not frames:
            return
        with torch.inference_mode():  # every output is computed on the model's device; one download each
            start = time.perf_counter()
            depths = self.estimator.predict_tensor([f.rgb for f in frames], [f.size for f in frames],
                                                   [f.scale for f in frames])
            for depth_t in depths:
                mask_range(depth_t, settings.min_depth, settings.max_depth)
            downloaded = [d.cpu().numpy() for d in depths]
            inference_ms = (time.perf_counter() - start) * 1000.0
            for frame, depth_t, depth in zip(frames, depths, downloaded):
                self._publish(settings, frame, depth_t, depth, inference_ms, len(frames))

    def _publish(self, settings: NodeSettings, frame: _Frame, depth_t: torch.Tensor, depth, inference_ms: float,
                 batch: int) -> None:
        camera, header = frame.camera, frame.header
        out_h, out_w = frame.size
        listeners = camera.listeners()
        camera.pubs["depth"].publish(messages.depth_to_image(depth, header))
        latency = self._latency_since(header.stamp)
        info = frame.info
        scaled_info = messages.scale_camera_info(info, out_w, out_h, header) if info is not None else None
        if scaled_info is not None:
            camera.pubs["info"].publish(scaled_info)
        if settings.publish_colored and listeners["colored"]:
            colour = colorize(depth_t, settings.colored_min_depth, settings.colored_max_depth, settings.colormap)
            camera.pubs["colored"].publish(messages.rgb_to_image(colour.cpu().numpy(), header))
        points_latency = None
        if settings.publish_points and listeners["points"] and scaled_info is not None:
            stride = int(settings.points_stride)
            colour_t = None
            if settings.points_rgb:
                image = torch.from_numpy(frame.rgb).to(depth_t.device, non_blocking=True)
                colour_t = resize_rgb(image, (out_h, out_w))[::stride, ::stride]
            buffer = cloud_buffer(depth_t, *messages.intrinsics(scaled_info), stride, colour_t)
            camera.pubs["points"].publish(messages.cloud_message(buffer.cpu().numpy(), header))
            points_latency = self._latency_since(header.stamp)
        camera.stats.published(time.monotonic(), inference_ms, latency, points_latency, batch)

    def _latency_since(self, stamp) -> float:
        now = self.get_clock().now().nanoseconds
        return (now - messages.stamp_ns(stamp)) / 1e6

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        """One status per camera (``<node>: depth``, or ``<node>: depth <camera>``); before configure one status."""
        now = time.monotonic()
        self._follow_publishers()
        est = self.estimator
        common = {
            "device": str(est.device) if est else "",
            "precision": str(self._p("precision")),
            "backend": est.backend_name if est else "",
            "model": ("trained" if est.trained else "UNTRAINED") if est else "not loaded",
        }
        statuses = []
        for camera in self.cameras or [_Camera("", 1)]:
            name = f"{self.get_fully_qualified_name()}: depth" + (f" {camera.name}" if camera.name else "")
            status = DiagnosticStatus(name=name, hardware_id="space_clip_ros")
            counts = camera.stats.counts()
            if est is None:
                status.level, status.message = DiagnosticStatus.ERROR, self._status
            elif not est.trained:
                status.level, status.message = DiagnosticStatus.WARN, f"{self._status}; UNTRAINED model"
            elif counts.get("rejected", 0):
                status.level, status.message = DiagnosticStatus.WARN, f"{self._status}; rejected inputs"
            else:
                status.level, status.message = DiagnosticStatus.OK, self._status
            camera.settle_delivery(now)
            values = {"state": self._status, **camera.stats.values(now), **camera.delivery_values(),
                      "image_reliability": camera.image_reliability or "n/a", **common}
            if camera.name:
                values["camera"] = camera.name
            status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
            statuses.append(status)
        array = DiagnosticArray(status=statuses)
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)


def main(args=None) -> None:
    """Console script ``depth_node``: ``depth_node --ros-args -p checkpoint:=PATH -p device:=cpu -r __ns:=/camera``.

    SIGINT and SIGTERM (Ctrl-C, ``ros2 launch`` stopping it) only set a flag that the spin loop checks between
    callbacks, so the node is torn down from the main thread once no callback is running: a clean exit, code 0."""
    fastdds.use_shipped_profile()
    try:
        from rclpy.signals import SignalHandlerOptions

        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except (ImportError, TypeError):  # an rclpy without the option: its own handlers stay
        rclpy.init(args=args)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    node = DepthNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._stop_worker()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
