"""A tf tree from recorded transforms (``/tf_static`` and ``/tf``), without ROS: lookups between any two frames
of the tree at a time, composed along the tree (up from each frame to their common ancestor), with dynamic edges
interpolated as tf2 does (linear in translation, slerp in rotation) and no extrapolation beyond their samples.

Transforms are 4x4 float64 matrices that map points in ``source`` coordinates to ``target`` coordinates, as
``tf2::Buffer::lookupTransform(target, source, time)`` returns them. One tree serves a recording (every sample kept)
and the live node (``cache_s``: dynamic samples older than that behind an edge's newest are dropped, as tf2's
buffer does; thread-safe, since the node's subscriptions add while its worker looks up).
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .stamps import stamp_ns


class TfError(LookupError):
    """No transform: frames not connected, or a time outside a dynamic edge's samples."""


def quaternion_matrix(q: Sequence[float]) -> np.ndarray:
    """3x3 rotation of a unit quaternion (x, y, z, w), normalised first."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def matrix_quaternion(r: np.ndarray) -> Tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation matrix (orthonormal)."""
    m = np.asarray(r, dtype=np.float64)
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        return ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s)
    i = int(np.argmax(np.diag(m)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
    q = np.zeros(4)
    q[i] = 0.25 * s
    q[j] = (m[j, i] + m[i, j]) / s
    q[k] = (m[k, i] + m[i, k]) / s
    q[3] = (m[k, j] - m[j, k]) / s
    return tuple(q)


def slerp(q0: np.ndarray, q1: np.ndarray, s: float) -> np.ndarray:
    """Spherical interpolation between unit quaternions (the shorter way round)."""
    q0, q1 = q0 / np.linalg.norm(q0), q1 / np.linalg.norm(q1)
    dot = float(np.dot(q0, q1))
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly equal: linear, normalised
        q = q0 + s * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1 - s) * theta) * q0 + np.sin(s * theta) * q1) / np.sin(theta)


def transform_matrix(translation: Sequence[float], rotation: Sequence[float]) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = quaternion_matrix(rotation)
    out[:3, 3] = translation
    return out


@dataclass
class _Edge:
    parent: str
    static: bool
    times: List[int] = field(default_factory=list)  # ns, sorted
    translations: List[np.ndarray] = field(default_factory=list)
    rotations: List[np.ndarray] = field(default_factory=list)

    def at(self, t: int, child: str) -> np.ndarray:
        """parent <- child at ``t`` (ns)."""
        if self.static:
            return transform_matrix(self.translations[-1], self.rotations[-1])
        i = bisect.bisect_left(self.times, t)
        if i < len(self.times) and self.times[i] == t:
            return transform_matrix(self.translations[i], self.rotations[i])
        if i == 0 or i == len(self.times):
            span = f"{self.times[0] / 1e9:.3f}..{self.times[-1] / 1e9:.3f} s"
            raise TfError(f"{self.parent} -> {child} at {t / 1e9:.3f} s is outside its recorded transforms ({span}):"
                          " no extrapolation")
        t0, t1 = self.times[i - 1], self.times[i]
        s = (t - t0) / (t1 - t0)
        translation = (1 - s) * self.translations[i - 1] + s * self.translations[i]
        return transform_matrix(translation, slerp(self.rotations[i - 1], self.rotations[i], s))


class TfTree:
    """Transforms added as (parent, child, time, translation, rotation); each child has one parent."""

    def __init__(self, cache_s: Optional[float] = None) -> None:
        self._edges: Dict[str, _Edge] = {}
        self._cache_ns = None if cache_s is None else int(cache_s * 1e9)
        self._lock = threading.RLock()
        self.received = 0  # transforms added

    def add(self, parent: str, child: str, stamp_ns: int, translation: Sequence[float], rotation: Sequence[float],
            static: bool = False) -> None:
        with self._lock:
            self._add(parent.lstrip("/"), child.lstrip("/"), stamp_ns, translation, rotation, static)

    def _add(self, parent: str, child: str, stamp_ns: int, translation: Sequence[float],
             rotation: Sequence[float], static: bool) -> None:
        self.received += 1
        edge = self._edges.get(child)
        if edge is None or edge.parent != parent or edge.static != static:
            edge = self._edges[child] = _Edge(parent, static)
        t = np.asarray(translation, dtype=np.float64)
        q = np.asarray(rotation, dtype=np.float64)
        if static:
            edge.times, edge.translations, edge.rotations = [stamp_ns], [t], [q]
            return
        i = bisect.bisect_left(edge.times, stamp_ns)
        if i < len(edge.times) and edge.times[i] == stamp_ns:
            edge.translations[i], edge.rotations[i] = t, q
        else:
            edge.times.insert(i, stamp_ns)
            edge.translations.insert(i, t)
            edge.rotations.insert(i, q)
        if self._cache_ns is not None:
            old = bisect.bisect_left(edge.times, edge.times[-1] - self._cache_ns)
            if old:
                del edge.times[:old], edge.translations[:old], edge.rotations[:old]

    def add_transforms(self, transforms: Iterable[Any], static: bool = False) -> int:
        """Add a tf2_msgs/TFMessage's ``transforms`` (geometry_msgs/TransformStamped, read duck-typed: rclpy's and
        rosbags' alike); how many."""
        n = 0
        for ts in transforms:
            tr, q = ts.transform.translation, ts.transform.rotation
            self.add(ts.header.frame_id, ts.child_frame_id, stamp_ns(ts.header.stamp), (tr.x, tr.y, tr.z),
                     (q.x, q.y, q.z, q.w), static)
            n += 1
        return n

    def frames(self) -> List[str]:
        with self._lock:
            return sorted(set(self._edges) | {e.parent for e in self._edges.values()})

    def _chain(self, frame: str) -> List[str]:
        chain = [frame]
        while chain[-1] in self._edges:
            chain.append(self._edges[chain[-1]].parent)
            if len(chain) > 1000:
                raise TfError(f"a loop in the tf tree above {frame}")
        return chain

    def _to_ancestor(self, chain: List[str], ancestor: str, t: int) -> np.ndarray:
        out = np.eye(4)
        for child in chain[:chain.index(ancestor)]:
            out = self._edges[child].at(t, child) @ out
        return out

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """4x4 ``target <- source`` at ``stamp_ns``; :class:`TfError` says why there is none."""
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return np.eye(4)
        with self._lock:
            return self._lookup(target, source, stamp_ns)

    def _lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        up_source, up_target = self._chain(source), self._chain(target)
        common = next((f for f in up_source if f in set(up_target)), None)
        if common is None:
            known = ", ".join(self.frames()) or "none"
            raise TfError(f"no tf path between {source} and {target} (frames in the recording: {known})")
        root_from_source = self._to_ancestor(up_source, common, stamp_ns)
        root_from_target = self._to_ancestor(up_target, common, stamp_ns)
        return np.linalg.inv(root_from_target) @ root_from_source

    def lookup_full(self, target: str, target_ns: int, source: str, source_ns: int,
                    fixed_frame: str = "") -> np.ndarray:
        """4x4 ``target`` at ``target_ns`` <- ``source`` at ``source_ns`` through ``fixed_frame`` (a frame fixed in
        the world, e.g. odom), as tf2's lookupTransform(target, target_time, source, source_time, fixed_frame): a
        sensor's points of one moment in a camera's frame of another while the robot moves. Without
        ``fixed_frame``: the lookup at ``source_ns``."""
        if not fixed_frame:
            return self.lookup(target, source, source_ns)
        return self.lookup(target, fixed_frame, target_ns) @ self.lookup(fixed_frame, source, source_ns)

    def has_dynamic(self, target: str, source: str) -> bool:
        """Whether the path between the two frames has a dynamic edge."""
        with self._lock:
            chains = self._chain(source.lstrip("/")) + self._chain(target.lstrip("/"))
            return any(not self._edges[f].static for f in chains if f in self._edges)
