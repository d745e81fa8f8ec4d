"""CUDA graph capture and replay, emulated on the CPU, for tests of what the node captures.

A CUDA graph records the kernels a function launches, with their arguments as they were: Python numbers are frozen
at capture, and a replay reads and writes exactly the memory captured. Code that takes a per-frame value as a
Python number, reads a tensor made anew each frame, or replaces its state instead of updating it in place gives
stale results on replay, silently. :func:`cpu_capture` keeps those rules without a GPU: every op is recorded with
its arguments (the same tensor objects, the same numbers); a replay runs the ops again in order and writes each
result into the tensor the capture produced. Like a real graph it keeps only addresses of the tensors that existed
before the capture (weak references here: a replay that would read one freed or moved raises FreedInputError) and
the memory of what the capture made (its pool). Like a real capture it leaves no trace of its own run: the tensors
that existed before and were written are put back (space_clip_ros.node.frame_graphs.KeepState).
"""

from __future__ import annotations

import gc
import warnings
import weakref
from typing import Any, Callable, List, Tuple

import torch
from torch.utils._pytree import tree_flatten, tree_map

from space_clip_ros.inference.capture import CudaRuntime
from space_clip_ros.node.frame_graphs import KeepState


class FreedInputError(RuntimeError):
    """A replay would read or write memory that a tensor of the capture no longer owns."""


class _Weak:
    """A tensor that existed before the capture, as a graph knows it: its address only."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.ref = weakref.ref(tensor)
        self.address = tensor.untyped_storage().data_ptr()
        self.what = f"{tuple(tensor.shape)} {tensor.dtype}"

    def get(self, op: Any) -> torch.Tensor:
        tensor = self.ref()
        if tensor is None:
            raise FreedInputError(f"the replay of {op} reads a {self.what} tensor that was freed after the capture")
        if tensor.untyped_storage().data_ptr() != self.address:
            raise FreedInputError(f"the replay of {op} reads a {self.what} tensor whose memory was replaced")
        return tensor


class _Recorder(KeepState):
    """Records each op with what a CUDA graph keeps of its arguments: tensors the capture made live on in the
    graph's pool (kept here), tensors from before it are only addresses (weak references, checked at replay)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: List[Tuple[Any, Any, Any, List[bool]]] = []
        # Every tensor alive before the capture (a scalar torch wraps during an op is not one: its value is baked
        # into the kernel's arguments, as CUDA does with a CPU scalar).
        with warnings.catch_warnings():  # isinstance on every object touches deprecated module attributes
            warnings.simplefilter("ignore")
            self._before = {id(o): weakref.ref(o) for o in gc.get_objects() if isinstance(o, torch.Tensor)}

    def _keep(self, value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        before = self._before.get(id(value))
        if before is not None and before() is value:
            return _Weak(value)
        return value  # made during the capture: in the graph's pool, alive as long as the graph

    def recorded(self, func, args, kwargs, out):
        inputs = {a.untyped_storage().data_ptr() for a in tree_flatten((args, kwargs))[0]
                  if isinstance(a, torch.Tensor)}
        # Outputs that share an input's memory (views, the written argument itself, a to() that changed nothing)
        # see the replay's values already; the others are copied into after each replay.
        flat_out = tree_flatten(out)[0]
        fresh = [isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs for t in flat_out]
        kept = tree_map(self._keep, (args, kwargs))
        self.ops.append((func, kept, tree_map(self._keep, out), fresh))
        return out


def _resolve(value: Any, op: Any) -> Any:
    return tree_map(lambda v: v.get(op) if isinstance(v, _Weak) else v, value)


def cpu_capture(fn: Callable[[], Any]) -> Tuple[Callable[[], None], Any]:
    """``fn`` captured: (replay, what ``fn`` returned), as :func:`space_clip_ros.node.frame_graphs.cuda_graph`
    does on a GPU. ``replay.ops`` is the number of ops recorded. A replay raises :class:`FreedInputError` where a
    real one would read freed or reused memory."""
    recorder = _Recorder()
    with recorder:
        outputs = fn()

    def replay() -> None:
        for func, kept, out, fresh in recorder.ops:
            args, kwargs = _resolve(kept, func)
            result = func(*args, **kwargs)
            captured = tree_flatten(_resolve(out, func))[0]
            for target, value, copy in zip(captured, tree_flatten(result)[0], fresh, strict=True):
                if copy:
                    target.copy_(value)

    replay.ops = len(recorder.ops)  # type: ignore[attr-defined]
    return replay, outputs


class EmulatedStream:
    """A stream of :class:`EmulatedCuda` (a name is enough)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<stream {self.name}>"


class EmulatedGraph:
    def __init__(self) -> None:
        self.stream = None
        self.pool_id = None
        self.invalid = False
        self.ended = False

    def pool(self):
        if not self.ended:  # as torch's CUDAGraph::pool(): only after a successful capture
            raise RuntimeError("Called CUDAGraph::pool() without a preceding successful capture.")
        return self.pool_id


class EmulatedCuda(CudaRuntime):
    """The CUDA calls of a capture (space_clip_ros.inference.capture.CudaRuntime) with the rules of the CUDA runtime
    and torch's caching allocator, on the CPU: one capture per stream; capture_begin opens the allocation to the
    graph's pool, then the stream's capture; an op that synchronises while its stream captures invalidates the
    capture (:meth:`host_read`); ending an invalidated capture raises *before* the allocation to the graph's pool is
    closed (torch's CUDAGraph::capture_end checks cudaStreamEndCapture first); ``graph.pool()`` answers only after a
    successful capture; ``empty_cache`` (:meth:`prepare`, the first step of every capture) fails its internal assert
    while any allocation to a pool is open."""

    def __init__(self) -> None:
        self.default = EmulatedStream("default")
        self.current = self.default
        self.capturing: dict = {}  # stream -> graph
        self.allocating: set = set()  # pools allocation goes to
        self.pool_uses: dict = {}  # pool -> count (graph_pool_handle's use count)
        self._pools = 0
        self.fail_begin = False  # the stream's capture fails to begin (after the allocation opened)

    def new_graph(self):
        return EmulatedGraph()

    def new_pool(self):
        self._pools += 1
        return ("private", self._pools)

    def current_stream(self, device):
        return self.current

    def set_stream(self, stream) -> None:
        self.current = stream

    def prepare(self, device) -> None:
        if self.allocating:
            raise RuntimeError("INTERNAL ASSERT FAILED: empty_cache while a capture's allocation is under way")

    def begin(self, graph, pool, mode) -> None:
        graph.pool_id = pool
        self.allocating.add(pool)
        self.pool_uses[pool] = self.pool_uses.get(pool, 0) + 1
        if self.current in self.capturing or self.fail_begin:
            raise RuntimeError("cudaErrorIllegalState: the stream cannot begin a capture")
        graph.stream = self.current
        self.capturing[self.current] = graph

    def end(self, graph) -> None:
        if self.current is not graph.stream:
            raise RuntimeError("Capture must end on the same stream it began on.")
        if self.capturing.get(graph.stream) is not graph:
            raise RuntimeError("cudaErrorIllegalState: the stream is not capturing")
        del self.capturing[graph.stream]  # cudaStreamEndCapture ends the capture, valid or not
        if graph.invalid:
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture")
        self.allocating.discard(graph.pool_id)
        graph.ended = True

    def is_capturing(self) -> bool:
        return self.current in self.capturing

    def end_allocation(self, device, pool) -> bool:
        if pool in self.allocating:
            self.allocating.discard(pool)
            return True
        return False

    def release_pool(self, device, pool) -> None:
        self.pool_uses[pool] -= 1

    def host_read(self) -> None:
        """What ``.item()`` does on a capturing stream: the capture is invalidated and the call fails."""
        graph = self.capturing.get(self.current)
        if graph is not None:
            graph.invalid = True
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
