"""CUDA graph capture that a failure cannot leave half done, on streams no other capture or warm-up shares.

``torch.cuda.graph`` ends a capture in two steps with nothing between them to clean up: the stream's capture, then
the caching allocator's allocation to the graph's pool, then the current stream put back. When the capture was
invalidated (a host read, a synchronising call, an op that cannot be captured), ending the stream's capture raises
and the other two never happen: the allocator still believes a capture is under way (the next capture's
``empty_cache`` fails an internal assert), and the thread keeps the side stream as its current stream. One failed
capture would then stop every later one, the model's programs and the background compiler's included.
:func:`capture_graph` captures with those steps in its own hands: on any failure it ends what was begun, gives the
graph's share of its pool back, and puts the previous stream back; the failure stays in the frame that caused it.

Streams: ``torch.cuda.Stream()`` hands out torch's pool of 32 streams per device in turn, so the 33rd stream drawn
is the first again. A background warm-up that got the same stream as a capture on another thread would launch its
kernels into that capture. :func:`dedicated_stream` never hands out a stream it already gave; each backend and each
pipeline of graphs draws one per thread that builds programs (:class:`ThreadStreams`).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Any, Callable, Dict, Optional, Set, Tuple

import torch

#: One CUDA graph capture at a time in the process (the model's programs, the background compiler's, the node's
#: per-frame path: space_clip_ros.node.frame_graphs).
CAPTURE_LOCK = threading.Lock()


@contextlib.contextmanager
def cudnn_benchmark():
    """cuDNN's benchmark mode while a program is warmed and captured (static shapes: the fastest convolution is
    picked once and baked into the graph), and the process's own setting again afterwards."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def warm_up(fn: Callable[[], Any], device: torch.device, stream: Any, runs: int,
            context: Callable[[], Any] = contextlib.nullcontext) -> None:
    """Run ``fn`` ``runs`` times on ``stream`` (inside ``context``) after the work already queued on the device's
    current stream, and wait for this stream only (a background warm-up never waits for the frames being served):
    kernels, workspaces and cuDNN's choices are set up outside the graph about to be captured there."""
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream), context():
        for _ in range(runs):
            fn()
    stream.synchronize()
    torch.cuda.current_stream(device).wait_stream(stream)


class CaptureError(RuntimeError):
    """A capture failed; everything it began was ended and the previous stream is current again."""


class CudaRuntime:
    """The CUDA calls a capture makes (tests emulate them on the CPU with CUDA's rules: test/graph_replay.py)."""

    def new_graph(self) -> Any:
        return torch.cuda.CUDAGraph()

    def new_pool(self) -> Any:
        """A pool id of its own for a graph (what capture_begin makes when given none; known here beforehand, since
        ``graph.pool()`` refuses to answer until a capture has ended)."""
        return torch.cuda.graph_pool_handle()

    def current_stream(self, device: torch.device) -> Any:
        return torch.cuda.current_stream(device)

    def set_stream(self, stream: Any) -> None:
        torch.cuda.set_stream(stream)

    def prepare(self, device: torch.device) -> None:
        """What torch.cuda.graph does first: finish pending work, return cached blocks (fails while an earlier
        capture's allocation is still open)."""
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()

    def begin(self, graph: Any, pool: Any, mode: str) -> None:
        graph.capture_begin(pool, capture_error_mode=mode)

    def end(self, graph: Any) -> None:
        graph.capture_end()

    def is_capturing(self) -> bool:
        """Whether the current stream is in a capture (an invalidated one too)."""
        return torch.cuda.is_current_stream_capturing()

    def end_allocation(self, device: torch.device, pool: Any) -> bool:
        """End allocation to ``pool`` if it is still open; True when it was (capture_end stopped before it)."""
        end = getattr(torch._C, "_cuda_endAllocateToPool", None)
        if end is None:
            return False
        try:
            end(device.index, pool)
        except RuntimeError:  # not allocating to it: capture_end (or nothing) ended it
            return False
        return True

    def release_pool(self, device: torch.device, pool: Any) -> None:
        """Give back a graph's use of ``pool`` (one capture_begin took it)."""
        release = getattr(torch._C, "_cuda_releasePool", None)
        if release is not None:
            release(device.index, pool)

    def owns_pool(self, graph: Any) -> bool:
        """Whether the graph will give its pool back itself when dropped (its capture ended: ``pool()`` answers)."""
        try:
            graph.pool()
        except RuntimeError:
            return False
        return True


CUDA = CudaRuntime()


def capture_graph(fn: Callable[[], Any], device: Any, stream: Any, pool: Optional[Any] = None,
                  mode: str = "thread_local", runtime: Optional[CudaRuntime] = None) -> Tuple[Any, Any]:
    """Capture ``fn()`` on ``stream`` into a new graph (allocating from ``pool``, or a pool of its own), one capture
    at a time in the process (:data:`CAPTURE_LOCK`): (graph, what ``fn`` returned). On any failure the capture is
    ended, the allocation to the pool closed, the pool's count given back and the previous current stream restored
    before :class:`CaptureError` is raised (its cause: the original error), so the next capture, and everything
    else on this thread, works as before."""
    device = torch.device(device)
    if runtime is None:
        runtime = CUDA
        if device.index is None:  # the allocator's pools are per device index
            device = torch.device("cuda", torch.cuda.current_device())
    with CAPTURE_LOCK:
        return _capture(runtime, fn, device, stream, pool, mode)


def _capture(runtime: CudaRuntime, fn: Callable[[], Any], device: torch.device, stream: Any, pool: Optional[Any],
             mode: str) -> Tuple[Any, Any]:
    graph = runtime.new_graph()
    pool_id = pool if pool is not None else runtime.new_pool()
    previous = runtime.current_stream(device)
    try:
        runtime.prepare(device)
    except Exception as error:
        raise CaptureError(f"preparing the capture failed: {error}") from error
    runtime.set_stream(stream)
    try:
        try:
            runtime.begin(graph, pool_id, mode)
        except Exception as error:  # capture_begin opens the allocation to the pool before the stream's capture
            if runtime.end_allocation(device, pool_id):
                with contextlib.suppress(Exception):
                    runtime.release_pool(device, pool_id)
            raise CaptureError(f"the capture could not begin: {error}") from error
        try:
            outputs = fn()
        except Exception as error:
            _abandon(runtime, device, graph, pool_id)
            raise CaptureError(f"capturing failed: {error}") from error
        try:
            runtime.end(graph)
        except Exception as error:
            _abandon(runtime, device, graph, pool_id)
            raise CaptureError(f"ending the capture failed: {error}") from error
    finally:
        runtime.set_stream(previous)
    return graph, outputs


def _abandon(runtime: CudaRuntime, device: torch.device, graph: Any, pool: Any) -> None:
    """After a failure inside a capture: end the stream's capture if it still runs (a graph that ends cleanly here
    owns its pool and gives it back when dropped); close the allocation to the pool if capture_end did not get that
    far; and give the pool's use back unless the graph will (capture_end failed after closing the allocation but
    before the graph counted as captured: nobody else would)."""
    if runtime.is_capturing():
        with contextlib.suppress(Exception):
            runtime.end(graph)
    if runtime.end_allocation(device, pool) or not runtime.owns_pool(graph):
        with contextlib.suppress(Exception):
            runtime.release_pool(device, pool)


_GIVEN: Set[Tuple[int, int]] = set()  # (device index, stream handle) of every stream handed out here
_GIVEN_LOCK = threading.Lock()


def _key(device: torch.device, stream: Any) -> Tuple[int, int]:
    return (device.index or 0, int(stream.cuda_stream))


def dedicated_stream(device: Any, new_stream: Optional[Callable[[torch.device], Any]] = None) -> Any:
    """A stream of torch's pool on ``device`` that no earlier call returned (torch hands its 32 streams out in
    turn, so plain ``torch.cuda.Stream()`` repeats after 32). Raises when every pool stream is taken; a
    :class:`ThreadStreams` gives its streams back when it is dropped."""
    device = torch.device(device)
    new_stream = new_stream or (lambda d: torch.cuda.Stream(device=d))
    with _GIVEN_LOCK:
        for _ in range(64):  # twice round the pool
            stream = new_stream(device)
            key = _key(device, stream)
            if key not in _GIVEN:
                _GIVEN.add(key)
                return stream
    raise RuntimeError(f"every stream of torch's pool on {device} is already dedicated to a capture or warm-up: "
                       "too many backends or pipelines in one process; make fewer DepthEstimators")


class ThreadStreams:
    """One dedicated stream per thread that asks (the thread serving frames, the background compiler), created on
    first use: a warm-up on one thread never runs on the stream another thread is capturing on."""

    def __init__(self, device: Any, new_stream: Optional[Callable[[torch.device], Any]] = None) -> None:
        self.device = torch.device(device)
        self.new_stream = new_stream
        self._streams: Dict[int, Any] = {}
        self._lock = threading.Lock()
        self._keys: Set[Tuple[int, int]] = set()
        weakref.finalize(self, _release, self._keys)  # dropped with its backend: its streams may be given again

    def get(self) -> Any:
        ident = threading.get_ident()
        with self._lock:
            stream = self._streams.get(ident)
            if stream is None:
                stream = self._streams[ident] = dedicated_stream(self.device, self.new_stream)
                self._keys.add(_key(self.device, stream))
            return stream


def _release(keys: Set[Tuple[int, int]]) -> None:
    with _GIVEN_LOCK:
        _GIVEN.difference_update(keys)
