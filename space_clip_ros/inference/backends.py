"""The ways a SPACE-CLIP model can run behind :class:`space_clip_ros.DepthEstimator`.

=============  ======================================================================================================
``eager``      PyTorch as written (how the authors' code runs); any device and precision.
``compile``    ``torch.compile`` of the model (CPU and CUDA); the first call compiles (about a minute for ViT-B/16
               on 2 CPU cores).
``cudagraph``  CUDA only: the whole frame path (upload, preprocessing, model, output resize, focal scale) captured
               once per (batch bucket 1/2/4/8, input size, output size) and replayed; model compiled inside unless
               ``compile=False``.
``openvino``   CPU: the ONNX export run by OpenVINO, fp32 or bf16 (``pip install 'space_clip_ros[openvino]'``).
``onnxruntime``  CPU: the ONNX export run by ONNX Runtime, fp32 (``pip install 'space_clip_ros[onnx]'``).
``auto``       see :func:`choose_backend`.
=============  ======================================================================================================

Every backend takes the same frames and returns the same numbers as ``eager`` up to its precision; the tests hold
them to it.
"""

from __future__ import annotations

import importlib.util
import logging
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..model import SpaceClip
from .pipeline import Size, to_output, to_pixel_values

LOG = logging.getLogger("space_clip_ros.inference")

BACKENDS = ("auto", "eager", "compile", "cudagraph", "openvino", "onnxruntime")

#: backend -> (Python module it needs, the extra that installs it)
OPTIONAL_MODULES = {"openvino": ("openvino", "openvino"), "onnxruntime": ("onnxruntime", "onnx")}


class BackendUnavailableError(ValueError):
    """The asked-for backend cannot run here; the message says what to install or choose instead."""


def require_module(backend: str) -> Any:
    """Import the optional runtime ``backend`` needs, or raise :class:`BackendUnavailableError` naming the extra."""
    module, extra = OPTIONAL_MODULES[backend]
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise BackendUnavailableError(
            f"backend {backend!r} needs the Python package {module!r}, which is not installed: "
            f"pip install 'space_clip_ros[{extra}]' (or: pip install {module}); or choose backend 'auto' or 'eager'"
        ) from error


def module_available(backend: str) -> bool:
    return importlib.util.find_spec(OPTIONAL_MODULES[backend][0]) is not None


class Backend:
    """Runs a model on (batches of) frames. Subclasses implement :meth:`forward`; some also :meth:`infer`."""

    name = "eager"
    #: False for backends that run their own copy of the model (ONNX runtimes): the torch weights can be released.
    needs_torch_weights = True

    def __init__(self, model: SpaceClip, device: torch.device, dtype: torch.dtype) -> None:
        self.device = device
        self.dtype = dtype
        #: dtype of the pixel values :meth:`forward` takes.
        self.input_dtype = dtype
        self.model = model
        prep = model.preprocessing
        self.input_size: Size = (int(prep.input_size[0]), int(prep.input_size[1]))
        #: The training size frames pass through on their way to the tower (see inference/pipeline.py).
        self.via: Size = (int(prep.output_size[0]), int(prep.output_size[1]))
        self.mean = torch.tensor(prep.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(prep.std, device=device).view(1, 3, 1, 1)

    def describe(self) -> str:
        return f"{self.name} on {self.device} ({_dtype_name(self.dtype)})"

    # ------------------------------------------------------------------ the model alone
    def forward(self, pixel_values: Tensor) -> Tensor:
        """(B, 3, S, S) pixel values (``input_dtype``, on ``device``) -> (B, 1, S, S) float32 depth on ``device``."""
        return self.model(pixel_values).float()

    def warmup(self, batch: int = 1) -> None:
        """Run the model once, so that compilation and allocation happen now rather than on the first frame."""
        side = self.input_size
        with torch.inference_mode():
            self.forward(torch.zeros(batch, 3, *side, device=self.device, dtype=self.input_dtype))

    # ------------------------------------------------------------------ frames of one size
    def pixel_values(self, frames: Tensor) -> Tensor:
        return to_pixel_values(frames.to(self.device, non_blocking=True), self.input_size, self.mean, self.std,
                               self.input_dtype, self.via)

    def infer(self, frames: Sequence[np.ndarray], output_size: Size, scales: Optional[Sequence[float]]) -> Tensor:
        """Frames of one size (HxWx3 uint8) -> (B, H', W') float32 metres on ``device`` at ``output_size``, times
        ``scales`` when given."""
        batch = torch.from_numpy(np.stack(frames))
        depth = self.forward(self.pixel_values(batch))
        scale = None if scales is None else torch.tensor(scales, dtype=torch.float32, device=self.device)
        return to_output(depth, output_size, scale)


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


class EagerBackend(Backend):
    name = "eager"

    def __init__(self, model: SpaceClip, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(model.to(device=device, dtype=dtype).eval(), device, dtype)


class CompileBackend(Backend):
    """``torch.compile`` of the whole model (frozen tower and decoder); same numbers as eager to float rounding."""

    name = "compile"

    def __init__(self, model: SpaceClip, device: torch.device, dtype: torch.dtype, mode: Optional[str] = None) -> None:
        super().__init__(model.to(device=device, dtype=dtype).eval(), device, dtype)
        self._compiled = torch.compile(self.model, mode=mode)

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self._compiled(pixel_values).float()


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
        torch.backends.cudnn.benchmark = True  # static shapes: pick the fastest convolution once
        super().__init__(model, device, dtype, compile=compile, max_programs=max_programs)
        self._pool = torch.cuda.graph_pool_handle()

    def describe(self) -> str:
        return super().describe() + (", compiled" if self.compiled else "")

    def _build(self, program: _Program) -> None:
        with torch.cuda.device(self.device):
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


# ---------------------------------------------------------------------- choosing
def choose_backend(device: torch.device, dtype: torch.dtype) -> Tuple[str, str]:
    """The backend ``auto`` picks for ``device`` and ``dtype``, and why (the rule in docs/performance.md)."""
    if device.type == "cuda":
        return "cudagraph", "CUDA device: the whole frame path in CUDA graphs, model compiled inside"
    if module_available("openvino"):
        return "openvino", "CPU with openvino installed: the fastest CPU backend measured (docs/performance.md)"
    if dtype == torch.float32 and module_available("onnxruntime"):
        return "onnxruntime", ("CPU with onnxruntime (no openvino) installed: faster than eager fp32 on the CPU "
                               "(docs/performance.md)")
    return "eager", ("CPU without openvino or onnxruntime: PyTorch eager; pip install 'space_clip_ros[openvino]' "
                     "for the faster CPU backend")


def create_backend(name: str, model: SpaceClip, device: torch.device, dtype: torch.dtype,
                   **options: Any) -> Tuple[Backend, str]:
    """Build backend ``name`` (one of :data:`BACKENDS`) for ``model``; returns it and the reason it was chosen."""
    key = (name or "auto").strip().lower()
    if key not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    reason = "asked for"
    if key == "auto":
        key, reason = choose_backend(device, dtype)
        reason = f"auto: {reason}"
    factories: Dict[str, Callable[..., Backend]] = {
        "eager": EagerBackend, "compile": CompileBackend, "cudagraph": CudaGraphBackend,
    }
    if key in OPTIONAL_MODULES:
        from . import runtimes

        factories.update(openvino=runtimes.OpenVinoBackend, onnxruntime=runtimes.OnnxRuntimeBackend)
    backend = factories[key](model, device, dtype, **options)
    LOG.info("backend %s (%s)", backend.describe(), reason)
    return backend, reason
