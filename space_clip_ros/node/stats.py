"""Frame statistics of the depth node, without ROS: counts by reason, rates and latency windows, and the
diagnostics values they become. Thread-safe: camera callbacks and the inference worker update it concurrently."""

from __future__ import annotations

import collections
import statistics
import threading
from typing import Deque, Dict, Optional


class Rate:
    """Events per second over a sliding window of ``window_s`` seconds."""

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


#: Counters always reported (0 until they happen), in diagnostics order.
COUNTERS = ("received", "published", "dropped", "idle_no_subscribers", "rejected", "rejected_image",
            "rejected_camera_info", "rejected_frame", "camera_info_unmatched", "scan_skipped")


class FrameStats:
    """What happened to the frames: received, dropped, rejected (by kind), published, and how fast."""

    def __init__(self, window: int = 50, rate_window_s: float = 5.0) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter = collections.Counter()
        self._in_rate, self._out_rate = Rate(rate_window_s), Rate(rate_window_s)
        self._latency_ms: Deque[float] = collections.deque(maxlen=window)
        self._points_latency_ms: Deque[float] = collections.deque(maxlen=window)
        self._inference_ms: Deque[float] = collections.deque(maxlen=window)
        self._batch: Deque[int] = collections.deque(maxlen=window)
        self._reasons: collections.Counter = collections.Counter()
        self.last_rejection = ""

    def frame_in(self, now: float) -> None:
        with self._lock:
            self._counts["received"] += 1
            self._in_rate.tick(now)

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def reject(self, kind: str, message: str, reason: str = "other") -> None:
        """A rejected input of ``kind`` (image, camera_info, frame), counted in total, by kind and by ``reason`` (a
        short stable name such as ``unknown_encoding``); ``message`` says what was wrong."""
        with self._lock:
            self._counts["rejected"] += 1
            self._counts[f"rejected_{kind}"] += 1
            self._reasons[reason] += 1
            self.last_rejection = f"{kind}: {message}"

    def published(self, now: float, inference_ms: float, latency_ms: float,
                  points_latency_ms: Optional[float] = None, batch: int = 1) -> None:
        """A published frame: its forward took ``inference_ms`` for ``batch`` frames (of all cameras)."""
        with self._lock:
            self._counts["published"] += 1
            self._batch.append(batch)
            self._out_rate.tick(now)
            self._inference_ms.append(inference_ms)
            self._latency_ms.append(latency_ms)
            if points_latency_ms is not None:
                self._points_latency_ms.append(points_latency_ms)

    def counts(self) -> Dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def values(self, now: float) -> Dict[str, str]:
        """The diagnostics key/values: rates, median latencies, every counter."""

        def median(values) -> str:
            return f"{statistics.median(values):.1f}" if values else "n/a"

        with self._lock:
            out = {
                "input_rate_hz": f"{self._in_rate.hz(now):.2f}",
                "output_rate_hz": f"{self._out_rate.hz(now):.2f}",
                "latency_ms_median": median(self._latency_ms),
                "points_latency_ms_median": median(self._points_latency_ms),
                "inference_ms_median": median(self._inference_ms),
                "batch_median": median(self._batch),
            }
            names = {"received": "frames_received", "published": "frames_published",
                     "dropped": "frames_dropped",
                     "idle_no_subscribers": "frames_idle_no_subscribers", "rejected": "rejected_total"}
            for key in COUNTERS:
                out[names.get(key, key)] = str(self._counts.get(key, 0))
            for reason, n in sorted(self._reasons.items()):  # one key per reason seen: rejected.unknown_encoding
                out[f"rejected.{reason}"] = str(n)
            for key, n in sorted(self._counts.items()):  # counters by reason: unaligned.reference_old
                if "." in key:
                    out[key] = str(n)
            out["last_rejection"] = self.last_rejection
        return out
