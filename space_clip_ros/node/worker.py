"""The depth node's inference thread, without ROS: every camera's latest frame is taken from the slot, checked and
decoded (:mod:`.intake`), given its scale reference and pose (:mod:`.reference`), run through one batched forward
(:mod:`.frame_pipeline`) and handed to the camera's publishers; rejections, skipped outputs and timings are counted
per camera, and log lines are throttled per key. A failing batch is counted on its cameras; the thread goes on."""

from __future__ import annotations

import functools
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

from ..stamps import stamp_ns
from ..tf_tree import TfTree
from .camera_state import CameraState, LatestSlot
from .frame_pipeline import FramePipeline, FrameResult
from .intake import Intake, Rejected, take_frame
from .reference import prepare_frame
from .settings import NodeSettings

#: Seconds between two log lines of one key (one kind of rejection on one camera, one skipped output, ...).
LOG_THROTTLE_S = 5.0


class Outputs(Protocol):
    """A camera's publishers as the worker uses them (the node's
    :class:`~space_clip_ros.ros.camera_topics.CameraTopics`)."""

    def listeners(self) -> Dict[str, int]:
        """Output key -> subscriber count (outputs nobody takes are not computed)."""

    def publish(self, header: Any, intake: Intake, result: FrameResult, settings: NodeSettings,
                scan_time: float) -> Dict[str, float]:
        """Publish a frame's outputs; output key -> latency since the image's stamp (ms)."""


class ThrottledLog:
    """One line per key every :data:`LOG_THROTTLE_S` at most, on a logger with ``info`` and ``warning``."""

    def __init__(self, logger: Any, period_s: float = LOG_THROTTLE_S) -> None:
        self.logger, self.period_s = logger, period_s
        self._last: Dict[str, float] = {}

    def __call__(self, key: str, text: str, level: str = "warn") -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.period_s:
            self._last[key] = now
            if level == "info":  # one call per severity: rclpy refuses a severity change at one call site
                self.logger.info(text)
            else:
                self.logger.warning(text)

    def reject(self, camera: CameraState, kind: str, message: str, reason: str = "other") -> None:
        """Count a rejected input of ``camera`` under ``reason`` and say so (throttled)."""
        camera.stats.reject(kind, message, reason)
        where = f" on camera '{camera.name}'" if camera.name else ""
        self(f"reject_{camera.name}_{kind}_{reason}", f"rejected {kind}{where} ({reason}): {message} (counted in "
             f"diagnostics as rejected.{reason}; node continues)")


class FrameWorker:
    """The thread between the subscriptions (:meth:`put`) and each camera's ``outputs(camera)``."""

    def __init__(self, log: ThrottledLog, outputs: Callable[[CameraState], Outputs]) -> None:
        self.log, self.outputs = log, outputs
        self.slot = LatestSlot()
        self._thread: Optional[threading.Thread] = None

    def start(self, cameras: List[CameraState], pipeline: FramePipeline, settings: Callable[[], NodeSettings],
              tree: TfTree) -> None:
        """Run frames of ``cameras`` through ``pipeline`` with the current ``settings()`` of each batch, poses and
        reference transforms from ``tree``."""
        self.cameras, self.pipeline, self.settings, self.tree = cameras, pipeline, settings, tree
        self.slot.start()
        self._thread = threading.Thread(target=self._run, name="space_clip_inference", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self.slot.running

    def put(self, camera: CameraState, msg: Any) -> None:
        self.slot.put(camera, msg)

    def stop(self, cameras: List[CameraState] = ()) -> None:
        """Stop the thread (after its current batch) and forget the frames of ``cameras`` still waiting."""
        self.slot.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10.0)
        self._thread = None
        self.slot.clear(list(cameras))

    def _run(self) -> None:
        while True:
            batch = self.slot.take(self.cameras)
            if batch is None:
                return
            try:
                self.process(batch)
            except Exception as error:  # a bug must not kill the worker: log it, count it, keep going
                for camera, _ in batch:
                    self.log.reject(camera, "frame", f"internal error {type(error).__name__}: {error}",
                                    "internal_error")

    def process(self, batch: List[Tuple[CameraState, Any]]) -> None:
        """One batch: one image message per camera in, every output published."""
        settings = self.settings()  # one consistent set of values for this batch
        taken = []
        for camera, msg in batch:
            try:
                intake = take_frame(settings, camera, msg, self.pipeline.estimator, self.outputs(camera).listeners())
            except Rejected as error:
                self.log.reject(camera, error.kind, str(error), error.reason)
                continue
            for key, text, level in intake.notes:
                self.log(key, text, level)
            if camera.aligner is not None or camera.fusion is not None:  # reference and pose after the forward
                intake.request.prepare = functools.partial(prepare_frame, camera=camera, settings=settings,
                                                           tree=self.tree, frame_id=msg.header.frame_id)
            taken.append((camera, msg.header, intake))
        if not taken:
            return
        results, inference_ms = self.pipeline.run([intake.request for _, _, intake in taken], settings)
        for (camera, header, intake), result in zip(taken, results, strict=True):
            stamp, previous = stamp_ns(header.stamp), camera.last_published_ns
            scan_time = (stamp - previous) / 1e9 if previous is not None and stamp > previous else 0.0
            latencies = self.outputs(camera).publish(header, intake, result, settings, scan_time)
            for output, problem in result.problems.items():
                if problem != "no camera_info":
                    camera.stats.count(f"{output}_skipped")
                    self.log(f"skip_{camera.name}_{output}", f"depth/{output} not published: {problem}")
            camera.last_published_ns = stamp
            if result.alignment is not None:
                camera.last_fit = result.alignment
            camera.stats.published(time.monotonic(), inference_ms, latencies["depth"], latencies.get("points"),
                                   len(taken))
