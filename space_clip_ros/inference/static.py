"""Static shapes: the frame path as programs with fixed input buffers, one per (batch bucket, input size, output
size); :class:`CudaGraphBackend` captures each as a CUDA graph and replays it.

Compilation (``compile``): ``False`` runs the model as written; ``True`` compiles it before a program's first run (the
caller waits: about a minute on a cold cache for ViT-B/16 on an H200); ``"background"`` (what ``auto`` picks on CUDA)
serves every new program uncompiled at once and compiles it on a worker thread, then swaps the compiled program in
atomically and logs it, so the first depth comes in seconds whatever the cache. Compiled code is cached on disk by
torch inductor in :func:`compile_cache_folder`, so a second start compiles in seconds.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..model import SpaceClip
from .base import LOG, Backend, BackendUnavailableError, user_cache_folder
from .capture import CaptureError, ThreadStreams, capture_graph, cudnn_benchmark, warm_up
from .processing import Size, to_output, to_pixel_values

#: How a static backend compiles: as written, before the first run, or on a worker while the uncompiled one serves.
COMPILE_MODES = ("off", "foreground", "background")
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def compile_mode(value: Union[bool, str, None]) -> str:
    """``compile`` as one of :data:`COMPILE_MODES` (``False``/``True``/``"background"`` and the names themselves)."""
    if value is None or value is False:
        return "off"
    if value is True:
        return "foreground"
    key = str(value).strip().lower()
    if key not in COMPILE_MODES:
        raise ValueError(f"compile must be True, False or one of {COMPILE_MODES}, got {value!r}")
    return key


def compile_cache_folder() -> Path:
    """Where torch inductor keeps compiled code across starts: ``$TORCHINDUCTOR_CACHE_DIR`` when set, else
    ``$XDG_CACHE_HOME`` (or ``~/.cache``) ``/space_clip_ros/inductor``, which is then set for this process."""
    value = os.environ.get(INDUCTOR_CACHE_ENV)
    if not value:
        value = str(user_cache_folder("inductor"))
        os.environ[INDUCTOR_CACHE_ENV] = value
    return Path(value)


def failure_reason(error: BaseException) -> str:
    """``Type: first line`` of the innermost cause of a compiler failure (dynamo wraps the backend's own error)."""
    while True:
        inner = getattr(error, "inner_exception", None) or error.__cause__
        if not isinstance(inner, BaseException) or inner is error:
            break
        error = inner
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


class _Program:
    """Static input buffers, a function of them, and its output: captured as a CUDA graph, or run as it is."""

    def __init__(self, inputs: Tuple[Tensor, ...], fn: Callable[..., Tensor], staging: Optional[Tensor],
                 compiled: bool, recipe: "Recipe") -> None:
        self.inputs = inputs
        self.fn = fn
        self.staging = staging  # pinned host copy of inputs[0] (CUDA), written by the caller
        self.copied: Optional[Any] = None  # CUDA event: the staging buffer may be written again once it fired
        self.graph: Optional[Any] = None
        self.output: Optional[Tensor] = None
        self.compiled = compiled
        self.capture_error: Optional[str] = None  # why this program runs uncaptured (CUDA graphs), if it does
        self.recipe = recipe  # how to make it again (compiled, by the background compiler)
        #: Held while the program runs and its output is copied out (a swap never frees a graph mid-replay).
        self.lock = threading.Lock()

    def run(self) -> Tensor:
        if self.graph is not None:
            self.graph.replay()
        else:
            self.output = self.fn(*self.inputs)
        assert self.output is not None
        return self.output


#: A program's recipe: its input shapes and dtypes, and a maker of its function from the model function to use.
Recipe = Tuple[Sequence[Tuple[Tuple[int, ...], torch.dtype]], Callable[[Callable[[Tensor], Tensor]], Callable]]


class StaticShapeBackend(Backend):
    """Static shapes: batches padded to a bucket (1, 2, 4, 8; larger batches run in chunks of 8), one program per
    (bucket, input size, output size) with its own input buffers, least recently used programs dropped past
    ``max_programs``. On its own (``name`` "static") it runs the programs as they are, on any device: the tests use
    it to check the bucketing and the background compilation on the CPU. :class:`CudaGraphBackend` captures each
    program as a CUDA graph.

    ``compile``: see the module's text; ``compile_backend``: torch.compile's backend (``inductor``; the tests use
    ``eager``, dynamo's trace without code generation)."""

    name = "static"
    buckets: Tuple[int, ...] = (1, 2, 4, 8)

    def __init__(self, model: SpaceClip, device: torch.device, dtype: torch.dtype,
                 compile: Union[bool, str] = False, max_programs: int = 16,
                 compile_backend: str = "inductor") -> None:
        super().__init__(model.to(device=device, dtype=dtype).eval(), device, dtype)
        self.max_programs = int(max_programs)
        self.compile_mode = compile_mode(compile)
        self.compile_backend = compile_backend
        self._compiled_fn: Optional[Callable[[Tensor], Tensor]] = None
        self._programs: "OrderedDict[Tuple, _Program]" = OrderedDict()
        self._lock = threading.RLock()  # the programs table
        self._queue: "queue.Queue[Tuple]" = queue.Queue()
        self._pending: set = set()
        self._worker: Optional[threading.Thread] = None
        self._idle = threading.Event()
        self._idle.set()
        self._started = time.monotonic()
        #: Why compilation stopped (the uncompiled programs keep serving), or None.
        self.compile_error: Optional[str] = None
        if self.compile_mode != "off":
            compile_cache_folder()

    @property
    def compiled(self) -> bool:
        """True once every program serves the compiled model (and compilation is on)."""
        with self._lock:
            return (self.compile_mode != "off" and self.compile_error is None
                    and all(p.compiled for p in self._programs.values()))

    def compile_state(self) -> str:
        """``off``, ``compiling (k of n programs compiled)``, ``compiled`` or ``failed: why`` (for diagnostics)."""
        if self.compile_mode == "off":
            return "off"
        if self.compile_error is not None:
            return f"failed, serving the uncompiled model: {self.compile_error}"
        with self._lock:
            done = sum(p.compiled for p in self._programs.values())
            total = len(self._programs)
        return "compiled" if done == total else f"compiling ({done} of {total} programs compiled)"

    def describe(self) -> str:
        extra = {"off": "", "foreground": ", compiled", "background": ", compiled in the background"}
        return super().describe() + extra[self.compile_mode]

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
        """The keys of the programs held, least recently used first: ("frames", batch, height, width, output size)
        or ("forward", batch)."""
        with self._lock:
            return list(self._programs)

    def programs(self) -> List[str]:
        """The programs held (each a captured graph on CUDA), least recently used first, for diagnostics:
        ``b8 1242x375->1242x375`` (a batch of 8 such frames) or ``b8 pixels``, with ``(uncaptured: why)`` after
        one whose CUDA graph capture failed."""
        with self._lock:
            held = list(self._programs.items())
        return [(f"b{key[1]} {key[3]}x{key[2]}->{key[4][1]}x{key[4][0]}" if key[0] == "frames" else f"b{key[1]} pixels")
                + (f" (uncaptured: {program.capture_error})" if program.capture_error else "")
                for key, program in held]

    # ------------------------------------------------------------------ compilation
    def _compiled_model(self) -> Callable[[Tensor], Tensor]:
        if self._compiled_fn is None:
            # dynamic=False: every bucket and size is a program of its own with static shapes (automatic dynamic
            # shapes would recompile the second bucket as one generic program for all of them).
            self._compiled_fn = torch.compile(self.model, backend=self.compile_backend, dynamic=False)
        return self._compiled_fn

    def _model_fn(self, compiled: bool) -> Callable[[Tensor], Tensor]:
        return self._compiled_model() if compiled else self.model

    def wait_compiled(self, timeout: Optional[float] = None) -> bool:
        """Block until the background compiler has nothing left to do; True when every program is compiled."""
        self._idle.wait(timeout)
        return self.compiled

    def _enqueue(self, key: Tuple) -> None:
        with self._lock:
            if key in self._pending:
                return
            self._pending.add(key)
            self._idle.clear()
            self._queue.put(key)
            if self._worker is None:
                self._worker = threading.Thread(target=self._compile_worker, name="space_clip_compile", daemon=True)
                self._worker.start()

    def _compile_worker(self) -> None:
        while True:
            key = self._queue.get()
            try:
                with self._lock:
                    served = self._programs.get(key)
                if served is not None and self.compile_error is None:
                    start = time.monotonic()
                    with torch.inference_mode():
                        program = self._new_program(served.recipe, compiled=True)
                    with self._lock:
                        old = self._programs.get(key)
                        if old is not None:  # still wanted: swap it in where it stood in the LRU order
                            with old.lock:
                                self._programs[key] = program
                    LOG.info("compiled program %s ready after %.1f s (%.1f s since start); it now serves", key,
                             time.monotonic() - start, time.monotonic() - self._started)
            except Exception as error:  # noqa: BLE001 - torch.compile failures are many and version-specific
                self.compile_error = failure_reason(error)
                LOG.warning("background compilation failed (%s); the uncompiled model keeps serving",
                            self.compile_error)
            finally:
                with self._lock:
                    self._pending.discard(key)
                    if not self._pending:
                        if self.compiled:
                            LOG.info("every program compiled, %.1f s since start",
                                     time.monotonic() - self._started)
                        self._idle.set()

    # ------------------------------------------------------------------ programs
    def _program(self, key: Tuple, recipe: Recipe) -> _Program:
        with self._lock:
            program = self._programs.get(key)
            if program is not None:
                self._programs.move_to_end(key)
                return program
        background = self.compile_mode == "background" and self.compile_error is None
        foreground = self.compile_mode == "foreground" and self.compile_error is None
        try:
            program = self._new_program(recipe, compiled=foreground)
        except Exception as error:  # noqa: BLE001 - torch.compile failures are many and version-specific
            if not foreground:
                raise
            self.compile_error = failure_reason(error)
            LOG.warning("%s: torch.compile failed (%s); running the uncompiled model instead", self.name,
                        self.compile_error)
            program = self._new_program(recipe, compiled=False)
        with self._lock:
            self._programs[key] = program
            while len(self._programs) > self.max_programs:
                self._programs.popitem(last=False)
        if background:
            LOG.info("program %s serves uncompiled while it compiles in the background", key)
            self._enqueue(key)
        return program

    def _new_program(self, recipe: Recipe, compiled: bool) -> _Program:
        shapes, make = recipe
        inputs = tuple(torch.zeros(shape, dtype=dtype, device=self.device) for shape, dtype in shapes)
        staging = None
        if self.device.type == "cuda":
            staging = torch.zeros(shapes[0][0], dtype=shapes[0][1], pin_memory=True)
        program = _Program(inputs, make(self._model_fn(compiled)), staging, compiled, recipe)
        self._build(program)
        return program

    def _build(self, program: _Program) -> None:
        """Prepare a new program; plain static shapes run the compiled model once (compiling it) and nothing else."""
        if program.compiled:
            program.fn(*program.inputs)

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
            program = self._program(("forward", size), ([((size, 3, *side), self.input_dtype)],
                                                        lambda model: (lambda pixels: model(pixels).float())))
            with program.lock:
                program.inputs[0][:n].copy_(chunk)
                outputs.append(program.run()[:n].clone())
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)  # one chunk: no second copy

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
                ([((size, height, width, 3), torch.uint8), ((size,), torch.float32)],
                 lambda model: self._frame_path(output_size, model)))
            with program.lock:
                self._load(program, chunk)
                program.inputs[1][:n].copy_(torch.tensor(values[start:start + n]), non_blocking=True)
                outputs.append(program.run()[:n].clone())
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)  # one chunk: no second copy

    def _frame_path(self, output_size: Size, model: Callable[[Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
        def run(frames: Tensor, scales: Tensor) -> Tensor:
            pixels = to_pixel_values(frames, self.input_size, self.mean, self.std, self.input_dtype, self.via)
            return to_output(model(pixels), output_size, scales)

        return run


class CudaGraphBackend(StaticShapeBackend):
    """:class:`StaticShapeBackend` with every program captured as a CUDA graph (all graphs share one memory pool;
    outputs are copied out right after each replay, so no graph's output is read after another graph ran). Graphs
    are captured in thread-local mode, one at a time, so the background compiler captures while frames replay."""

    name = "cudagraph"
    warmup_runs = 3

    def __init__(self, model: SpaceClip, device: torch.device, dtype: torch.dtype,
                 compile: Union[bool, str] = "background", max_programs: int = 16,
                 compile_backend: str = "inductor") -> None:
        if device.type != "cuda":
            raise BackendUnavailableError(
                f"backend 'cudagraph' needs a CUDA device, got {device}; on the CPU use 'auto', 'openvino', "
                "'onnxruntime', 'compile' or 'eager'")
        super().__init__(model, device, dtype, compile=compile, max_programs=max_programs,
                         compile_backend=compile_backend)
        self._pool = torch.cuda.graph_pool_handle()
        #: One warm-up and capture stream per building thread (serving, background compiler), never shared.
        self._streams = ThreadStreams(device)

    def _build(self, program: _Program) -> None:
        """Warm the program up and capture it on this thread's own stream; a failed capture leaves nothing behind
        (:func:`~.capture.capture_graph`) and raises, so the caller serves the frame its other way."""
        stream = self._streams.get()
        with torch.cuda.device(self.device), cudnn_benchmark():
            warm_up(lambda: program.fn(*program.inputs), self.device, stream, self.warmup_runs)

            def run() -> None:
                program.output = program.fn(*program.inputs)

            try:
                program.graph, _ = capture_graph(run, self.device, stream, pool=self._pool)
            except CaptureError as error:  # the program serves uncaptured; nothing of the capture is left behind
                program.graph, program.output = None, None
                program.capture_error = failure_reason(error)
                LOG.warning("capturing a program of the model failed (%s): it runs uncaptured",
                            program.capture_error)
