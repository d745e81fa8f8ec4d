"""Device and precision choices, resolved once with errors that say what to do."""

from __future__ import annotations

import re
from typing import Union

import torch

#: The precisions of the project, by name: inference (DepthEstimator, the node), training and evaluation (train/
#: adds "auto": bf16 autocast on CUDA, fp32 on the CPU).
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def precision_name(dtype: torch.dtype) -> str:
    """``fp32`` / ``fp16`` / ``bf16`` for a torch dtype (its own name otherwise)."""
    return next((name for name, value in PRECISIONS.items() if value == dtype), str(dtype))


def autocast_dtype(name: str, device: torch.device) -> Union[torch.dtype, None]:
    """The autocast dtype of precision ``name`` for training or evaluation on ``device``: None for fp32 (no
    autocast), bf16 or fp16, and ``auto``: bf16 on CUDA, None on the CPU. fp16 needs CUDA (``ValueError``)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if name == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    dtype = resolve_precision(name, device)
    return None if dtype == torch.float32 else dtype


DEVICE_SYNTAX = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_spec(spec: Union[str, torch.device, None]) -> str:
    """``spec`` normalised (lower case, stripped) when it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, else a
    ``ValueError`` saying so; whether that device exists is :func:`resolve_device`'s question."""
    text = str(spec if spec is not None else "auto").strip().lower()
    if not DEVICE_SYNTAX.fullmatch(text):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {spec!r}")
    return text


def resolve_device(spec: Union[str, torch.device, None] = "auto") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``. A CUDA device always comes with
    its index (``cuda`` and ``auto``: the current device): ``torch.cuda.set_device``, DistributedDataParallel's
    ``device_ids`` and the caching allocator's pools need one."""
    spec = check_device_spec(str(spec) if isinstance(spec, torch.device) else (spec or "auto"))
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {spec!r} was requested but CUDA is not available to this torch "
            f"({torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); use device 'cpu' or 'auto', "
            "or install a CUDA build of torch (docs/training.md, GPU)"
        )
    index = int(spec.partition(":")[2] or torch.cuda.current_device())
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {spec!r} was requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return torch.device("cuda", index)


#: What inference's ``auto`` precision is on each kind of device: fp16 on CUDA (max relative depth error 3.9e-4
#: against fp32 on an H200 at half the time; layer norms, softmax and the depth head's output stay in fp32 where the
#: kernels accumulate), fp32 on the CPU (bf16 there only when asked: openvino runs it where the CPU has it).
AUTO_PRECISION = {"cuda": "fp16", "cpu": "fp32"}
#: Every name an inference precision may take.
INFERENCE_PRECISIONS = ("auto", *PRECISIONS)


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """``auto`` (:data:`AUTO_PRECISION`: fp16 on CUDA, fp32 on the CPU), ``fp32``, ``fp16`` (CUDA only) or
    ``bf16``."""
    key = (name or "fp32").strip().lower()
    if key == "auto":
        key = AUTO_PRECISION.get(device.type, "fp32")
    if key not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(INFERENCE_PRECISIONS)}, got {name!r}")
    if key == "fp16" and device.type != "cuda":
        raise ValueError("precision 'fp16' needs a CUDA device; on the CPU use 'bf16' or 'fp32'")
    return PRECISIONS[key]


def release_memory() -> None:
    """Collect garbage, free cached GPU memory and hand freed heap pages back to the system (glibc keeps them
    otherwise: a process that dropped a model still shows its size)."""
    import ctypes
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def release_torch_weights(model: torch.nn.Module, reason: str) -> None:
    """Free ``model``'s parameters and buffers in place (each becomes an empty tensor) when another runtime holds
    its own copy; running the torch model afterwards raises an error that says why. The module keeps its other
    attributes (config, preprocessing, training camera, provenance)."""
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            tensor.data = torch.empty(0, dtype=tensor.dtype)

    def refuse(module, args):
        raise RuntimeError(f"this model's torch weights were released ({reason}); load the checkpoint again to run "
                           "it in torch")

    for module in (model, *model.children()):
        module.register_forward_pre_hook(refuse)
    model.weights_released = reason
    release_memory()
