"""CUDA graph capture and replay, emulated on the CPU, for tests of what the node captures.

A CUDA graph records the kernels a function launches, with their arguments as they were: Python numbers are frozen
at capture, and a replay reads and writes exactly the memory captured. Code that takes a per-frame value as a
Python number, reads a tensor made anew each frame, or replaces its state instead of updating it in place gives
stale results on replay, silently. :func:`cpu_capture` keeps those rules without a GPU: every op is recorded with
its arguments (the same tensor objects, the same numbers); a replay runs the ops again in order and writes each
result into the tensor the capture produced. Like a real capture it leaves no trace of its own run: the tensors
that existed before and were written are put back (space_clip_ros.node.frame_graphs.KeepState).
"""

from __future__ import annotations

from typing import Any, Callable, List, Tuple

import torch
from torch.utils._pytree import tree_flatten

from space_clip_ros.node.frame_graphs import KeepState


class _Recorder(KeepState):
    def __init__(self) -> None:
        super().__init__()
        self.ops: List[Tuple[Any, tuple, dict, Any, List[bool]]] = []

    def recorded(self, func, args, kwargs, out):
        inputs = {a.untyped_storage().data_ptr() for a in tree_flatten((args, kwargs))[0]
                  if isinstance(a, torch.Tensor)}
        # Outputs that share an input's memory (views, the written argument itself, a to() that changed nothing)
        # see the replay's values already; the others are copied into after each replay.
        fresh = [isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs
                 for t in tree_flatten(out)[0]]
        self.ops.append((func, args, kwargs, out, fresh))
        return out


def cpu_capture(fn: Callable[[], Any]) -> Tuple[Callable[[], None], Any]:
    """``fn`` captured: (replay, what ``fn`` returned), as :func:`space_clip_ros.node.frame_graphs.cuda_graph`
    does on a GPU. ``replay.ops`` is the number of ops recorded."""
    recorder = _Recorder()
    with recorder:
        outputs = fn()

    def replay() -> None:
        for func, args, kwargs, out, fresh in recorder.ops:
            result = func(*args, **kwargs)
            for captured, value, copy in zip(tree_flatten(out)[0], tree_flatten(result)[0], fresh, strict=True):
                if copy:
                    captured.copy_(value)

    replay.ops = len(recorder.ops)  # type: ignore[attr-defined]
    return replay, outputs
