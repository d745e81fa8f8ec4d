"""One camera's state in the depth node, without ROS: the latest frame waiting for inference, the order of stamps,
the camera_info cache and its pairing with images, and the delivery estimate (how many images announced by their
camera_info arrived). Thread-safe where the subscription callbacks and the inference worker meet (the slot).

Messages are read duck-typed (``msg.header.stamp.sec`` / ``.nanosec``), so plain objects serve in tests.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Deque, Dict, List, Optional, Tuple

from ..alignment import ScaleAligner
from ..stamps import stamp_ns
from ..temporal import TemporalFusion
from .reference import ReferenceQueue
from .stats import FrameStats

#: A stamp this far behind the last processed one is a time reset (a bag loop, a simulator restart), not disorder.
STAMP_RESET_NS = 3_000_000_000
#: A camera_info older than this without its image counts as an image lost on the way (delivery estimate).
DELIVERY_WAIT_S = 1.0
DELIVERY_WINDOW = 100


class LatestSlot:
    """The newest frame of each of several cameras waiting for the worker: a newer frame replaces a waiting one
    (counted as dropped), so latency never grows when cameras are faster than the model."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = False

    def start(self) -> None:
        with self._cond:
            self._running = True

    def stop(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()

    @property
    def running(self) -> bool:
        return self._running

    def put(self, camera: "CameraState", msg: Any) -> None:
        with self._cond:
            if camera.pending is not None:
                camera.stats.count("dropped")
            camera.pending = msg
            self._cond.notify()

    def take(self, cameras: List["CameraState"], timeout: float = 0.5) -> Optional[List[Tuple["CameraState", Any]]]:
        """Every waiting frame (one per camera), waiting for one if there is none; None once stopped."""
        with self._cond:
            while self._running and not any(c.pending is not None for c in cameras):
                self._cond.wait(timeout=timeout)
            if not self._running:
                return None
            batch = [(camera, camera.pending) for camera in cameras if camera.pending is not None]
            for camera, _ in batch:
                camera.pending = None
            return batch

    def clear(self, cameras: List["CameraState"]) -> None:
        with self._cond:
            for camera in cameras:
                camera.pending = None


class StampOrder:
    """Frames of one camera must not go back in time: an older stamp than the last processed frame's is rejected,
    unless it is more than STAMP_RESET_NS older (a recording looping, a simulator restarting: a new start)."""

    def __init__(self) -> None:
        self.last: Optional[int] = None  # stamp of the last processed frame, nanoseconds

    def check(self, stamp: int) -> str:
        """``accept``, ``reject`` (out of order) or ``reset`` (time jumped back: accept as a new start)."""
        if self.last is None or stamp >= self.last:
            return "accept"
        return "reject" if self.last - stamp <= STAMP_RESET_NS else "reset"

    def processed(self, stamp: int) -> None:
        self.last = stamp

    def forget(self) -> None:
        self.last = None


class DeliveryEstimate:
    """camera_info messages are small and arrive; an image whose camera_info came but which did not arrive within
    DELIVERY_WAIT_S was lost on the way (large frames over best-effort DDS). Reports the share that arrived."""

    def __init__(self, window: int = DELIVERY_WINDOW) -> None:
        self._stamps: Deque[int] = collections.deque(maxlen=4 * window)
        self._stamp_set: set = set()
        self._infos: Deque[Tuple[int, float]] = collections.deque(maxlen=4 * window)
        self._delivery: Deque[bool] = collections.deque(maxlen=window)
        self.missing = 0

    def saw_image(self, key: int) -> None:
        if len(self._stamps) == self._stamps.maxlen:
            self._stamp_set.discard(self._stamps[0])
        self._stamps.append(key)
        self._stamp_set.add(key)

    def seen(self, key: int) -> bool:
        return key in self._stamp_set

    def saw_info(self, key: int, now: float) -> None:
        self._infos.append((key, now))

    def settle(self, now: float) -> None:
        """camera_info messages older than DELIVERY_WAIT_S: was their image received?"""
        while self._infos and now - self._infos[0][1] >= DELIVERY_WAIT_S:
            key, _ = self._infos.popleft()
            arrived = key in self._stamp_set
            self._delivery.append(arrived)
            self.missing += not arrived

    def values(self) -> Dict[str, str]:
        if not self._delivery:
            return {"image_delivery": "n/a (needs camera_info)"}
        return {"image_delivery": f"{sum(self._delivery) / len(self._delivery):.2f}",
                "images_missing": str(self.missing)}


class CameraState:
    """One camera of the node: its name (topics ``name/...``; "" for the single unnamed camera), the latest frame
    waiting for inference, stamp order, camera_info cache, delivery estimate and statistics."""

    def __init__(self, name: str, cache: int) -> None:
        self.name = name
        self.pending: Optional[Any] = None
        self.order = StampOrder()
        self.infos: Deque[Any] = collections.deque(maxlen=cache)
        self.delivery = DeliveryEstimate()
        self.stats = FrameStats()
        self.last_published_ns: Optional[int] = None  # stamp of the last published frame (scan_time)
        # Scale alignment and temporal fusion (set up by the node when enabled): the reference messages, the
        # camera's aligner and fusion state, the last frame's alignment (diagnostics) and why tf gave no pose.
        self.reference: Optional[Any] = None
        self.aligner: Optional[Any] = None
        self.fusion: Optional[Any] = None
        self.last_fit: Optional[Any] = None
        self.pose_problem = ""

    def refine(self, settings: Any) -> None:
        """Set up (or drop) the camera's scale reference, aligner and fusion as ``settings`` (NodeSettings) ask."""
        self.reference = ReferenceQueue(settings.scale_reference) if settings.scale_reference else None
        self.aligner = ScaleAligner(**settings.alignment()) if settings.scale_reference else None
        self.fusion = TemporalFusion(**settings.fusion()) if settings.temporal_filter != "off" else None
        self.last_fit = None

    def topic(self, relative: str) -> str:
        return f"{self.name}/{relative}" if self.name else relative

    def resize_cache(self, cache: int) -> None:
        self.infos = collections.deque(self.infos, maxlen=cache)

    def saw_info(self, msg: Any, now: float) -> None:
        self.infos.append(msg)
        self.delivery.saw_info(stamp_ns(msg.header.stamp), now)

    def pair_info(self, stamp: Any) -> Tuple[Optional[Any], bool]:
        """(camera_info with the image's stamp, True), else (the latest one, False), else (None, True)."""
        infos = list(self.infos)
        if not infos:
            return None, True
        key = stamp_ns(stamp)
        for info in reversed(infos):
            if stamp_ns(info.header.stamp) == key:
                return info, True
        return infos[-1], False
