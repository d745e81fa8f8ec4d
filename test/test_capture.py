"""CUDA graph captures that fail stay in the frame that failed (space_clip_ros.inference.capture): on the CPU through
test/graph_replay.EmulatedCuda, which keeps the CUDA runtime's and torch's allocator's rules for a capture, and on a
GPU for real (benchmarks/device_check.sh)."""

import threading

import pytest
import torch
from graph_replay import EmulatedCuda, EmulatedStream

from space_clip_ros.inference.capture import CaptureError, ThreadStreams, capture_graph, dedicated_stream

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/device_check.sh)")


def torch_graph_sequence(runtime, fn, stream):
    """What ``with torch.cuda.graph(g, stream=stream): fn()`` does, step for step (its __enter__ and __exit__)."""
    graph = runtime.new_graph()
    previous = runtime.current_stream("cuda")
    runtime.prepare("cuda")
    runtime.set_stream(stream)
    runtime.begin(graph, runtime.new_pool(), "thread_local")
    try:
        fn()
    finally:
        runtime.end(graph)
        runtime.set_stream(previous)
    return graph


def test_torch_graph_after_an_invalidated_capture_breaks_every_later_capture():
    """Why capture_graph exists: torch.cuda.graph's exit, after a capture a host read invalidated, leaves the
    allocator allocating to the dead graph's pool and the side stream current."""
    runtime, side = EmulatedCuda(), EmulatedStream("side")
    with pytest.raises(RuntimeError, match="previous error during capture"):
        torch_graph_sequence(runtime, runtime.host_read, side)
    assert runtime.current is side and runtime.allocating
    with pytest.raises(RuntimeError, match="INTERNAL ASSERT"):
        torch_graph_sequence(runtime, lambda: None, EmulatedStream("other"))


def test_a_failed_capture_leaves_nothing_behind_and_the_next_capture_works():
    runtime, side = EmulatedCuda(), EmulatedStream("side")
    with pytest.raises(CaptureError, match="not permitted when stream is capturing") as failure:
        capture_graph(runtime.host_read, "cuda", side, runtime=runtime)
    assert isinstance(failure.value.__cause__, RuntimeError)  # the original error, for the diagnostics' reason
    assert runtime.current is runtime.default  # the thread's stream as it was
    assert not runtime.allocating and not runtime.capturing
    assert all(uses == 0 for uses in runtime.pool_uses.values())  # the failed graph's pool given back
    graph, out = capture_graph(lambda: "outputs", "cuda", side, runtime=runtime)
    assert graph.ended and out == "outputs" and runtime.current is runtime.default


def test_a_capture_that_cannot_begin_leaves_nothing_behind():
    runtime, side = EmulatedCuda(), EmulatedStream("side")
    runtime.fail_begin = True
    with pytest.raises(CaptureError, match="could not begin"):
        capture_graph(lambda: None, "cuda", side, runtime=runtime)
    assert runtime.current is runtime.default and not runtime.allocating
    assert all(uses == 0 for uses in runtime.pool_uses.values())
    runtime.fail_begin = False
    graph, _ = capture_graph(lambda: None, "cuda", side, runtime=runtime)
    assert graph.ended


def test_a_python_error_inside_a_capture_ends_it_cleanly():
    runtime, side = EmulatedCuda(), EmulatedStream("side")

    def broken():
        raise ValueError("a shape the program did not expect")

    with pytest.raises(CaptureError, match="a shape the program did not expect"):
        capture_graph(broken, "cuda", side, runtime=runtime)
    assert runtime.current is runtime.default and not runtime.allocating and not runtime.capturing
    capture_graph(lambda: None, "cuda", side, pool=("shared", 1), runtime=runtime)
    assert runtime.pool_uses[("shared", 1)] == 1  # a shared pool counts the graph that lives


class _Pool:
    """torch's stream pool: hands its streams out in turn."""

    def __init__(self, size, base):
        self.size, self.base, self.drawn = size, base, 0

    def __call__(self, device):
        stream = EmulatedStream(f"pool {self.drawn % self.size}")
        stream.cuda_stream = self.base + self.drawn % self.size
        self.drawn += 1
        return stream


def test_dedicated_streams_are_never_handed_out_twice():
    """torch.cuda.Stream() repeats after the pool's 32 streams; a dedicated stream never does."""
    pool = _Pool(4, base=90_000)
    device = "cuda:7"  # a device of its own in the registry of the process
    streams = [dedicated_stream(device, pool) for _ in range(4)]
    assert len({s.cuda_stream for s in streams}) == 4
    with pytest.raises(RuntimeError, match="already dedicated"):
        dedicated_stream(device, pool)


def test_each_building_thread_has_a_stream_of_its_own():
    streams = ThreadStreams("cuda:6", _Pool(32, base=80_000))
    mine = streams.get()
    assert streams.get() is mine
    other = []
    worker = threading.Thread(target=lambda: other.append(streams.get()))
    worker.start()
    worker.join()
    assert other[0] is not mine and other[0].cuda_stream != mine.cuda_stream


def test_streams_of_a_dropped_backend_can_be_dedicated_again():
    import gc

    pool = _Pool(2, base=70_000)
    streams = ThreadStreams("cuda:5", pool)
    streams.get()
    dedicated_stream("cuda:5", pool)  # the pool's other stream: both are taken now
    del streams
    gc.collect()
    assert dedicated_stream("cuda:5", pool).cuda_stream == 70_000


@CUDA
def test_on_cuda_dedicated_streams_survive_the_pool_wrapping():
    device = torch.device("cuda", torch.cuda.current_device())
    mine = [dedicated_stream(device) for _ in range(3)]
    plain = [torch.cuda.Stream(device) for _ in range(40)]
    assert len({s.cuda_stream for s in plain}) <= 32  # torch's pool repeats: why dedicated streams exist
    handles = [s.cuda_stream for s in mine + [dedicated_stream(device)]]
    assert len(set(handles)) == 4


@CUDA
def test_on_cuda_an_invalidated_capture_is_cleaned_up_and_later_captures_work():
    device = torch.device("cuda", torch.cuda.current_device())
    x = torch.ones(8, device=device)
    stream = dedicated_stream(device)
    before = torch.cuda.current_stream(device)
    with pytest.raises(CaptureError):
        capture_graph(lambda: (x * 2).sum().item(), device, stream)  # a host read: invalidates the capture
    assert torch.cuda.current_stream(device) == before
    torch.cuda.empty_cache()  # the allocator has no capture under way
    out = {}
    graph, _ = capture_graph(lambda: out.setdefault("y", x * 3), device, stream)
    x.fill_(2.0)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out["y"], torch.full((8,), 6.0, device=device))


@CUDA
def test_on_cuda_the_models_programs_capture_after_a_failed_capture(checkpoint):
    """A failed capture elsewhere in the process (here: the frame path's) leaves the model's CUDA graphs working:
    a new batch bucket is captured and gives the eager model's depth."""
    import numpy as np

    from space_clip_ros import DepthEstimator

    graphed = DepthEstimator(str(checkpoint), device="cuda", precision="fp32", backend="cudagraph", compile=False)
    eager = DepthEstimator(str(checkpoint), device="cuda", precision="fp32", backend="eager")
    frame = np.random.default_rng(0).integers(0, 255, (96, 320, 3), dtype=np.uint8)
    graphed([frame])
    with pytest.raises(CaptureError):
        capture_graph(lambda: torch.ones(2, device="cuda").sum().item(), "cuda", dedicated_stream("cuda"))
    depth = graphed([frame, frame])  # bucket 2: a new program, captured now
    assert all("uncaptured" not in p for p in graphed.programs()), graphed.programs()
    np.testing.assert_allclose(np.stack(depth), np.stack(eager([frame, frame])), rtol=1e-4, atol=1e-4)
