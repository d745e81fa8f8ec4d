"""Start-up in seconds: a static-shape backend serves each new program uncompiled at once, compiles it on a worker
thread and swaps the compiled one in; a compiler that fails leaves the uncompiled model serving, and says why. The
compiler here is real dynamo with a test backend that waits until the test lets it finish (on the GPU the same code
runs inductor and captures CUDA graphs; benchmarks/bench_startup.py measures it there)."""

import logging
import threading

import numpy as np
import pytest
import torch
from helpers import tiny_model

from space_clip_ros.inference import EagerBackend, StaticShapeBackend
from space_clip_ros.inference.static import compile_cache_folder, compile_mode


class GatedCompiler:
    """A torch.compile backend that blocks until ``release`` and counts the graphs it compiled."""

    def __init__(self, fail: bool = False) -> None:
        self.gate = threading.Event()
        self.graphs = 0
        self.fail = fail

    def __call__(self, graph_module, example_inputs):
        assert self.gate.wait(60), "the test never released the compiler"
        if self.fail:
            raise RuntimeError("no compiler for this graph")
        self.graphs += 1
        return graph_module.forward


@pytest.fixture
def log_lines():
    """What the inference package logs during the test (its logger need not propagate to the root one)."""
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger = logging.getLogger("space_clip_ros.inference")
    handler, level = Collect(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def _frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (48, 80, 3), dtype=np.uint8) for _ in range(n)]


def test_first_depth_comes_uncompiled_then_the_compiled_program_takes_over(clip_tower, log_lines):
    compiler = GatedCompiler()
    backend = StaticShapeBackend(tiny_model(clip_tower), torch.device("cpu"), torch.float32, compile="background",
                                 compile_backend=compiler)
    eager = EagerBackend(tiny_model(clip_tower), torch.device("cpu"), torch.float32)
    frames = _frames(3)
    with torch.inference_mode():
        expected = eager.infer(frames, (30, 50), [1.0, 2.0, 0.5])
        first = backend.infer(frames, (30, 50), [1.0, 2.0, 0.5])  # answered while the compiler is still blocked
        torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-5)
        assert not backend.compiled and compiler.graphs == 0
        assert backend.compile_state() == "compiling (0 of 1 programs compiled)"
        served = backend._programs[("frames", 4, 48, 80, (30, 50))]
        assert not served.compiled
        compiler.gate.set()
        assert backend.wait_compiled(timeout=120)
        assert compiler.graphs >= 1 and backend.compile_state() == "compiled"
        swapped = backend._programs[("frames", 4, 48, 80, (30, 50))]
        assert swapped is not served and swapped.compiled
        torch.testing.assert_close(backend.infer(frames, (30, 50), [1.0, 2.0, 0.5]), expected, rtol=1e-5, atol=1e-5)
        # A new shape after that: served at once uncompiled, compiled in the background too.
        one = backend.infer(frames[:1], (30, 50), None)
        torch.testing.assert_close(one, eager.infer(frames[:1], (30, 50), None), rtol=1e-5, atol=1e-5)
        assert backend.wait_compiled(timeout=120)
        assert all(p.compiled for p in backend._programs.values()) and len(backend.program_keys()) == 2
    text = "\n".join(log_lines)
    assert "serves uncompiled while it compiles in the background" in text
    assert "ready after" in text and "every program compiled" in text


def test_a_failing_compiler_leaves_the_uncompiled_model_serving(clip_tower, log_lines):
    compiler = GatedCompiler(fail=True)
    compiler.gate.set()
    backend = StaticShapeBackend(tiny_model(clip_tower), torch.device("cpu"), torch.float32, compile="background",
                                 compile_backend=compiler)
    frames = _frames(1)
    with torch.inference_mode():
        first = backend.infer(frames, (48, 80), None)
        assert not backend.wait_compiled(timeout=120)
        assert backend.compile_state().startswith("failed, serving the uncompiled model")
        assert "no compiler for this graph" in backend.compile_state()
        torch.testing.assert_close(backend.infer(frames, (48, 80), None), first)
    assert "background compilation failed" in "\n".join(log_lines)


def test_foreground_compile_compiles_before_the_first_frame_and_falls_back_on_failure(clip_tower, log_lines):
    compiler = GatedCompiler()
    compiler.gate.set()
    backend = StaticShapeBackend(tiny_model(clip_tower), torch.device("cpu"), torch.float32, compile=True,
                                 compile_backend=compiler)
    with torch.inference_mode():
        backend.infer(_frames(1), (48, 80), None)
    assert compiler.graphs >= 1 and backend.compiled and backend.compile_state() == "compiled"
    failing = GatedCompiler(fail=True)
    failing.gate.set()
    backend = StaticShapeBackend(tiny_model(clip_tower), torch.device("cpu"), torch.float32, compile=True,
                                 compile_backend=failing)
    with torch.inference_mode():
        depth = backend.infer(_frames(1), (48, 80), None)
    assert torch.isfinite(depth).all() and not backend.compiled
    assert "torch.compile failed" in "\n".join(log_lines)


def test_compile_modes_and_the_persistent_cache_folder(monkeypatch, tmp_path):
    assert [compile_mode(v) for v in (False, True, "background", None, "OFF")] == \
        ["off", "foreground", "background", "off", "off"]
    with pytest.raises(ValueError, match="compile must be"):
        compile_mode("sometimes")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache_folder() == tmp_path / "space_clip_ros" / "inductor"
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "space_clip_ros" / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))  # a user's own choice is kept
    assert compile_cache_folder() == tmp_path / "mine"


class ShapeRecorder:
    """A torch.compile backend that records whether each graph it is given has symbolic (dynamic) shapes."""

    def __init__(self) -> None:
        self.graphs = []

    def __call__(self, graph_module, example_inputs):
        symbolic = any(isinstance(value, torch.SymInt)
                       or (isinstance(value, torch.Tensor) and any(isinstance(d, torch.SymInt) for d in value.shape))
                       for value in example_inputs)
        self.graphs.append(symbolic)
        return graph_module.forward


def test_each_batch_bucket_compiles_a_static_program(clip_tower):
    """One compiled model serves buckets 1, 2 and 4: each bucket is its own static graph (torch.compile's automatic
    dynamic shapes would recompile the second bucket as a generic, symbolic-shape program, slower on every frame)."""
    compiler = ShapeRecorder()
    backend = StaticShapeBackend(tiny_model(clip_tower), torch.device("cpu"), torch.float32, compile=True,
                                 compile_backend=compiler)
    for n in (1, 2, 3):
        backend.infer(_frames(n), (48, 80), None)
    assert len(compiler.graphs) >= 3 and not any(compiler.graphs), compiler.graphs
