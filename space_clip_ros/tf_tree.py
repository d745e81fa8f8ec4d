"""A tf tree from recorded transforms (``/tf_static`` and ``/tf``), without ROS: lookups between any two frames
of the tree at a time, composed along the tree (up from each frame to their common ancestor), with dynamic edges
interpolated as tf2 does (linear in translation, slerp in rotation) and no extrapolation beyond their samples.

Transforms are 4x4 float64 matrices that map points in ``source`` coordinates to ``target`` coordinates, as
``tf2::Buffer::lookupTransform(target, source, time)`` returns them.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np


class TfError(LookupError):
    """No transform: frames not connected, or a time outside a dynamic edge's samples."""


def quaternion_matrix(q: Sequence[float]) -> np.ndarray:
    """3x3 rotation of a unit quaternion (x, y, z, w), normalised first."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


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

    def __init__(self) -> None:
        self._edges: Dict[str, _Edge] = {}

    def add(self, parent: str, child: str, stamp_ns: int, translation: Sequence[float], rotation: Sequence[float],
            static: bool = False) -> None:
        parent, child = parent.lstrip("/"), child.lstrip("/")
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

    def frames(self) -> List[str]:
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
        up_source, up_target = self._chain(source), self._chain(target)
        common = next((f for f in up_source if f in set(up_target)), None)
        if common is None:
            known = ", ".join(self.frames()) or "none"
            raise TfError(f"no tf path between {source} and {target} (frames in the recording: {known})")
        root_from_source = self._to_ancestor(up_source, common, stamp_ns)
        root_from_target = self._to_ancestor(up_target, common, stamp_ns)
        return np.linalg.inv(root_from_target) @ root_from_source

    def has_dynamic(self, target: str, source: str) -> bool:
        """Whether the path between the two frames has a dynamic edge."""
        chains = self._chain(source.lstrip("/")) + self._chain(target.lstrip("/"))
        return any(not self._edges[f].static for f in chains if f in self._edges)
