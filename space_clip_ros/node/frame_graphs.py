"""The path after the model as one replayed program per frame signature: a CUDA graph on a GPU.

:meth:`FramePipeline.stage <space_clip_ros.node.frame_pipeline.FramePipeline.stage>` has static shapes, reads
nothing on the host and keeps its state in place (the tracker's scale, the fusion's held depth), so it can be
captured. Here each frame signature (size, outputs wanted, camera model, the camera's aligner and fusion, the
reference's buffer capacity, whether the fusion carries its history, the settings) gets static input buffers: the
model's depth, the stamp, the reference's points and their move, the fusion's motion, the frame for a coloured
cloud. A frame's values are copied into them; the signature's first frame runs eagerly on them (every constant made,
every buffer allocated), the second is captured and replayed, the ones after are replayed: one launch for the ~780
ops of scale alignment, fusion, confidence and every output. Programs are per frame, not per batch: which cameras
share a batch changes from batch to batch, a camera's setup does not (identical cameras in one batch get a program
each). The outputs are the graph's own tensors, overwritten by the next replay: the pipeline downloads them at once.

``capture`` is what makes a program of a function: :func:`cuda_graph` on CUDA. On the CPU there is nothing to
capture and the pipeline stages eagerly; the tests capture with a CPU replay of the ops instead
(test/graph_replay.py), which keeps CUDA graphs' rules: Python values are frozen at capture, and inputs must be
in the buffers captured.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

LOG = logging.getLogger(__name__)

#: A capture: ``fn`` made into a program; returns (replay, the outputs fn returned while captured).
Capture = Callable[[Callable[[], Any]], Tuple[Callable[[], None], Any]]


def written(func: Any, args: tuple, kwargs: dict) -> List[torch.Tensor]:
    """The tensor arguments an op writes (in-place and out= ops), from its schema."""
    out = []
    for i, argument in enumerate(func._schema.arguments):
        if argument.alias_info is not None and argument.alias_info.is_write:
            value = args[i] if i < len(args) else kwargs.get(argument.name)
            out += [t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor)]
    return out


class KeepState(TorchDispatchMode):
    """Runs code without leaving a trace in the tensors that existed before it: each one it writes is saved
    before the first write and put back on exit (a warm-up before a capture must not fuse or filter a frame
    twice). Tensors the code makes itself are not kept."""

    def __init__(self) -> None:
        super().__init__()
        self.made: set = set()
        self.saved: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for tensor in written(func, args, kwargs):
            if id(tensor) not in self.made and id(tensor) not in self.saved:
                self.saved[id(tensor)] = (tensor, tensor.clone())
        out = func(*args, **kwargs)
        self.made.update(id(t) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
        return self.recorded(func, args, kwargs, out)

    def recorded(self, func: Any, args: tuple, kwargs: dict, out: Any) -> Any:
        """What a subclass does with each op after it ran (test/graph_replay.py records them)."""
        return out

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        for tensor, before in self.saved.values():
            tensor.copy_(before)


class CapturedInputs(TorchDispatchMode):
    """Collects into ``held`` every tensor an op of the code reads or writes that existed before the code ran (not
    made by one of its ops): what a CUDA graph captured from that code reads and writes by address, and so must
    outlive it. A camera's caches may drop or replace such a tensor (scan indices, the fusion's rays) while the
    program lives; held here, its memory is never given to anything else while the graph may still read it."""

    def __init__(self, held: Dict[int, torch.Tensor]) -> None:
        super().__init__()
        self.held = held
        self._made: Dict[int, "weakref.ref[torch.Tensor]"] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for tensor in tree_flatten((args, kwargs))[0]:
            if isinstance(tensor, torch.Tensor) and id(tensor) not in self.held:
                made = self._made.get(id(tensor))
                if made is None or made() is not tensor:
                    self.held[id(tensor)] = tensor
        out = func(*args, **kwargs)
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                self._made[id(tensor)] = weakref.ref(tensor)
        return out


#: Eager runs on the capture's stream before a capture, with the state kept: kernels, workspaces and cuDNN's
#: choices initialised on that stream outside the graph.
WARMUP_RUNS = 2


def cuda_graph(device: Any = "cuda") -> Capture:
    """Captures on ``device`` as CUDA graphs (each in a memory pool of its own), on a stream of this pipeline's own
    per thread, warmed up there first, in thread-local mode, one capture at a time in the process. A failed capture
    leaves nothing behind (:func:`~space_clip_ros.inference.capture.capture_graph`) and raises."""
    from ..inference.capture import ThreadStreams, capture_graph, cudnn_benchmark, warm_up

    device = torch.device(device)
    streams = ThreadStreams(device)

    def capture(fn: Callable[[], Any]) -> Tuple[Callable[[], None], Any]:
        stream = streams.get()
        with torch.cuda.device(device), cudnn_benchmark():
            warm_up(fn, device, stream, WARMUP_RUNS, KeepState)  # after the inputs' copies on the current stream
            graph, outputs = capture_graph(fn, device, stream)

        def replay() -> None:
            with torch.cuda.device(device):  # the current stream of the graph's device
                graph.replay()
        return replay, outputs
    return capture


@dataclasses.dataclass
class _Entry:
    frames: List[Any]  # the batch's requests with their tensors replaced by the static buffers
    depths: List[torch.Tensor]  # the model's depth, one buffer per frame
    runs: int = 0
    replay: Optional[Callable[[], None]] = None
    outputs: Any = None
    held: List[torch.Tensor] = dataclasses.field(default_factory=list)  # what the graph reads: alive while it is


class FrameGraphs:
    """The replayed post-model programs of one pipeline, one per frame signature (a camera's setup), least recently
    used dropped past ``max_graphs``. A batch replays one program per frame: which cameras share a batch changes from
    batch to batch, a camera's setup does not."""

    def __init__(self, capture: Capture, max_graphs: int = 32) -> None:
        self.capture = capture
        self.max_graphs = int(max_graphs)
        self._entries: "OrderedDict[Tuple, _Entry]" = OrderedDict()
        self._lock = threading.Lock()
        self.captured = 0  # programs captured so far (diagnostics, tests)
        self.failure: Optional[str] = None  # why a capture failed: the path runs eagerly from then on

    def stage(self, pipeline: Any, frames: Sequence[Any], models: Sequence[Any], raw: Sequence[torch.Tensor],
              settings: Any) -> List[Tuple[Dict[str, torch.Tensor], Dict[str, str]]]:
        """:meth:`FramePipeline.stage` of ``frames``, each through its signature's program (a reference given as a
        numpy depth image, as tools and tests may, is staged eagerly; after a failed capture everything is)."""
        if self.failure is not None or any(frame.reference is not None and not isinstance(frame.reference, tuple)
                                           for frame in frames):
            return pipeline.stage(frames, models, raw, settings)
        seen: Dict[Tuple, int] = {}
        staged = []
        for frame, model, depth in zip(frames, models, raw, strict=True):
            key = self.signature(pipeline, frame, model, depth, settings)
            seen[key] = seen.get(key, -1) + 1  # identical cameras in one batch: a program each, none overwritten
            staged += self._stage_one(pipeline, (key, seen[key]), frame, model, depth, settings)
            if self.failure is not None:  # this frame failed its capture: the rest eagerly, as the first did
                rest = len(staged)
                staged += pipeline.stage(frames[rest:], models[rest:], raw[rest:], settings)
                break
        return staged

    def _stage_one(self, pipeline: Any, key: Tuple, frame: Any, model: Any, depth: torch.Tensor,
                   settings: Any) -> List[Tuple[Dict[str, torch.Tensor], Dict[str, str]]]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry(*_static_inputs([frame], [depth]))
                while len(self._entries) > self.max_graphs:
                    self._entries.popitem(last=False)
            self._entries.move_to_end(key)
        _load(entry, [frame], [depth])

        def run():
            return pipeline.stage(entry.frames, [model], entry.depths, settings)

        entry.runs += 1
        if entry.runs == 1:  # a signature's first frame: eagerly, on the buffers (constants, allocations)
            return run()
        if entry.replay is None:
            held: Dict[int, torch.Tensor] = {}

            def captured_run():
                with CapturedInputs(held):  # each run anew: what one run made, the next one reads as an input
                    return run()

            try:
                entry.replay, entry.outputs = self.capture(captured_run)
                entry.held = list(held.values())
            except Exception as error:  # noqa: BLE001 - capture failures are many and driver-specific
                from ..inference.static import failure_reason

                self.failure = failure_reason(error)
                LOG.warning("capturing the path after the model failed (%s): it runs eagerly from now on",
                            self.failure)
                self._entries.clear()
                return pipeline.stage([frame], [model], [depth], settings)
            self.captured += 1
            LOG.info("the path after the model is captured for a new frame signature (%d so far)", self.captured)
        entry.replay()
        return entry.outputs

    def state(self) -> str:
        """For /diagnostics: how many programs are held, or why the path runs eagerly."""
        if self.failure is not None:
            return f"failed, running eagerly: {self.failure}"
        return f"{len(self._entries)} signatures, {self.captured} captured"

    @staticmethod
    def signature(pipeline: Any, frame: Any, model: Any, depth: torch.Tensor, settings: Any) -> Tuple:
        """What a frame's program is specialised to: everything of the frame that is a Python value in its path."""
        return (settings, pipeline.capacities([frame]), _frame_signature(frame, model, depth))


def _tensor_signature(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return (tuple(value.shape), value.dtype, value.device)
    if isinstance(value, tuple):
        return (type(value).__name__,) + tuple(_tensor_signature(v) for v in value)
    raise TypeError(f"a frame's tensor input must be a tensor or a tuple of them, got {type(value).__name__}")


def _frame_signature(frame: Any, model: Any, depth: torch.Tensor) -> Tuple:
    return (tuple(frame.size), frame.wants, model, _tensor_signature(depth),
            id(frame.aligner) if frame.aligner is not None else None, _tensor_signature(frame.reference),
            id(frame.fusion) if frame.fusion is not None else None,
            frame.fusion.carried_from() if frame.fusion is not None and frame.motion is not None else None,
            _tensor_signature(frame.rgb_device), frame.stamp_t is None)


#: The tensor inputs of a request that change from frame to frame.
_INPUTS = ("reference", "motion", "rgb_device", "stamp_t")


def _like(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, tuple):
        parts = [torch.empty_like(v) for v in value]
        return value._make(parts) if hasattr(value, "_make") else tuple(parts)  # a ReferenceCloud, or a pair
    return torch.empty_like(value)


def _static_inputs(frames: Sequence[Any], raw: Sequence[torch.Tensor]) -> Tuple[List[Any], List[torch.Tensor]]:
    static = [dataclasses.replace(frame, **{name: _like(getattr(frame, name)) for name in _INPUTS})
              for frame in frames]
    return static, [torch.empty_like(depth) for depth in raw]


def _copy(into: Any, value: Any) -> None:
    if isinstance(into, tuple):
        for buffer, part in zip(into, value, strict=True):
            buffer.copy_(part, non_blocking=True)
    elif into is not None:
        into.copy_(value, non_blocking=True)


def _load(entry: _Entry, frames: Sequence[Any], raw: Sequence[torch.Tensor]) -> None:
    """This batch's values into the signature's buffers (device copies; the host values ride along)."""
    for static, frame, buffer, depth in zip(entry.frames, frames, entry.depths, raw, strict=True):
        buffer.copy_(depth, non_blocking=True)
        for name in _INPUTS:
            _copy(getattr(static, name), getattr(frame, name))
        static.stamp_ns, static.pose, static.reference_reason = frame.stamp_ns, frame.pose, frame.reference_reason
