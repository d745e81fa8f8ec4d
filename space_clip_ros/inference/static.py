"""Static shapes: the frame path as programs with fixed input buffers, one per (batch bucket, input size, output
size); :class:`CudaGraphBackend` captures each as a CUDA graph and replays it."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..model import SpaceClip
from .base import LOG, Backend, BackendUnavailableError
from .pipeline import Size, to_output, to_pixel_values


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


class _Program:
    """Static input buffers, a function of them, and its output: captured as a CUDA graph, or run as it is."""

    def __init__(self, inputs: Tuple[Tensor, ...], fn: Callable[..., Tensor], staging: Optional[Tensor]) -> None:
        self.inputs = inputs
        self.fn = fn
        self.staging = staging  # pinned host copy of inputs[0] (CUDA), written by the caller
        self.copied: Optional[Any] = None  # CUDA event: the staging buffer may be written again once it fired
        self.graph: Optional[Any] = None
        self.output: Optional[Tensor] = None

    def run(self) -> Tensor:
        if self.graph is not None:
            self.graph.replay()
        else:
            self.output = self.fn(*self.inputs)
        assert self.output is not None
        return self.output


class StaticShapeBackend(Backend):
    """Static shapes: batches padded to a bucket (1, 2, 4, 8; larger batches run in chunks of 8), one program per
    (bucket, input size, output size) with its own input buffers, least recently used programs dropped past
    ``max_programs``. On its own (``name`` "static") it runs the programs as they are, on any device: the tests use
    it to check the bucketing on the CPU. :class:`CudaGraphBackend` captures each program as a CUDA graph."""

    name = "static"
    buckets: Tuple[int, ...] = (1, 2, 4, 8)

    def __init__(self, model: SpaceClip, device: torch.device, dtype: torch.dtype, compile: bool = False,
                 max_programs: int = 16) -> None:
        super().__init__(model.to(device=device, dtype=dtype).eval(), device, dtype)
        self.max_programs = int(max_programs)
        self._model_fn: Callable[[Tensor], Tensor] = torch.compile(self.model) if compile else self.model
        self.compiled = bool(compile)
        self._programs: "OrderedDict[Tuple, _Program]" = OrderedDict()

    @property
    def max_batch(self) -> int:
        return self.buckets[-1]

    def bucket(self, n: int) -> int:
        """The smallest bucket that holds ``n`` frames (``n`` <= :attr:`max_batch`)."""
        for size in self.buckets:
            if size >= n:
                return size
        raise ValueError(f"a batch of {n} is larger than the largest bucket {self.max_batch}")

    def program_keys(self) -> List[Tuple]:
        return list(self._programs)

    # ------------------------------------------------------------------ programs
    def _model(self, pixel_values: Tensor) -> Tensor:
        return self._model_fn(pixel_values)

    def _program(self, key: Tuple, shapes: Sequence[Tuple[Tuple[int, ...], torch.dtype]],
                 fn: Callable[..., Tensor]) -> _Program:
        program = self._programs.get(key)
        if program is not None:
            self._programs.move_to_end(key)
            return program
        inputs = tuple(torch.zeros(shape, dtype=dtype, device=self.device) for shape, dtype in shapes)
        staging = None
        if self.device.type == "cuda":
            staging = torch.zeros(shapes[0][0], dtype=shapes[0][1], pin_memory=True)
        program = _Program(inputs, fn, staging)
        self._build(program)
        self._programs[key] = program
        while len(self._programs) > self.max_programs:
            self._programs.popitem(last=False)
        return program

    def _build(self, program: _Program) -> None:
        """Prepare a new program; plain static shapes need nothing."""

    def _load(self, program: _Program, frames: Sequence[np.ndarray]) -> None:
        """Write frames into the program's first input (through the pinned staging buffer on CUDA)."""
        if program.staging is None:
            target = program.inputs[0]
            for i, frame in enumerate(frames):
                target[i].copy_(torch.from_numpy(frame))
            return
        if program.copied is not None:
            program.copied.synchronize()  # the last upload from this buffer has finished
        host = program.staging.numpy()
        for i, frame in enumerate(frames):
            host[i] = frame
        program.inputs[0].copy_(program.staging, non_blocking=True)
        program.copied = torch.cuda.Event()
        program.copied.record()

    # ------------------------------------------------------------------ the model alone
    def forward(self, pixel_values: Tensor) -> Tensor:
        side = self.input_size
        outputs = []
        for start in range(0, pixel_values.shape[0], self.max_batch):
            chunk = pixel_values[start:start + self.max_batch]
            n, size = chunk.shape[0], self.bucket(chunk.shape[0])
            program = self._program(("forward", size), [((size, 3, *side), self.input_dtype)],
                                    lambda pixels: self._model(pixels).float())
            program.inputs[0][:n].copy_(chunk)
            outputs.append(program.run()[:n].clone())
        return torch.cat(outputs)

    # ------------------------------------------------------------------ frames of one size
    def infer(self, frames: Sequence[np.ndarray], output_size: Size, scales: Optional[Sequence[float]]) -> Tensor:
        height, width = frames[0].shape[:2]
        output_size = (int(output_size[0]), int(output_size[1]))
        values = [1.0] * len(frames) if scales is None else [float(s) for s in scales]
        outputs = []
        for start in range(0, len(frames), self.max_batch):
            chunk = frames[start:start + self.max_batch]
            n, size = len(chunk), self.bucket(len(chunk))
            program = self._program(
                ("frames", size, height, width, output_size),
                [((size, height, width, 3), torch.uint8), ((size,), torch.float32)],
                self._frame_path(output_size))
            self._load(program, chunk)
            program.inputs[1][:n].copy_(torch.tensor(values[start:start + n]), non_blocking=True)
            outputs.append(program.run()[:n].clone())
        return torch.cat(outputs)

    def _frame_path(self, output_size: Size) -> Callable[[Tensor, Tensor], Tensor]:
        def run(frames: Tensor, scales: Tensor) -> Tensor:
            pixels = to_pixel_values(frames, self.input_size, self.mean, self.std, self.input_dtype, self.via)
            return to_output(self._model(pixels), output_size, scales)

        return run


class CudaGraphBackend(StaticShapeBackend):
    """:class:`StaticShapeBackend` with every program captured as a CUDA graph (all graphs share one memory pool;
    outputs are copied out right after each replay, so no graph's output is read after another graph ran)."""

    name = "cudagraph"
    warmup_runs = 3

    def __init__(self, model: SpaceClip, device: torch.device, dtype: torch.dtype, compile: bool = True,
                 max_programs: int = 16) -> None:
        if device.type != "cuda":
            raise BackendUnavailableError(
                f"backend 'cudagraph' needs a CUDA device, got {device}; on the CPU use 'auto', 'openvino', "
                "'onnxruntime', 'compile' or 'eager'")
        super().__init__(model, device, dtype, compile=compile, max_programs=max_programs)
        self._pool = torch.cuda.graph_pool_handle()

    def describe(self) -> str:
        return super().describe() + (", compiled" if self.compiled else "")

    def _build(self, program: _Program) -> None:
        with torch.cuda.device(self.device), cudnn_benchmark():
            try:
                self._warm(program)
            except Exception as error:  # noqa: BLE001 - torch.compile failures are many and version-specific
                if not self.compiled:
                    raise
                LOG.warning("cudagraph: torch.compile failed (%s: %s); capturing the uncompiled model instead",
                            type(error).__name__, str(error).splitlines()[0] if str(error) else "")
                self._model_fn, self.compiled = self.model, False
                self._warm(program)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                program.output = program.fn(*program.inputs)
            program.graph = graph

    def _warm(self, program: _Program) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.warmup_runs):
                program.fn(*program.inputs)
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize(self.device)
