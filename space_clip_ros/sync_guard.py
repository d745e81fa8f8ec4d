"""The per-frame path's rule, checked: no tensor value read on the host, no output shape that depends on data.

On a GPU every such op is a synchronisation (the host waits for the device) or breaks a CUDA graph; on the CPU it
costs nothing, which is why CPU benchmarks hide it. :class:`SyncGuard` is a torch dispatch mode that sees every op
below Python: it fails (or records) on the ops listed in :data:`DATA_DEPENDENT` and on boolean-mask indexing, and
counts ops (a proxy for kernel launches, visible without a GPU). The tests run the per-frame functions under it on the
CPU; the benchmarks print its counts.

    with SyncGuard() as guard:
        outputs = per_frame_function(...)
    guard.ops  # ops dispatched
"""

from __future__ import annotations

import traceback
from collections import Counter
from typing import Any, Dict, List, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


def _ops(*names: str) -> Dict[Any, str]:
    table = {}
    for spec in names:
        name, _, why = spec.partition(": ")
        packet = getattr(aten, name, None)
        if packet is None:  # not in this torch
            continue
        for overload in packet.overloads():
            table[getattr(packet, overload)] = why
    return table


#: Ops that read a value on the host or whose output shape depends on the data, and why.
DATA_DEPENDENT: Dict[Any, str] = _ops(
    "_local_scalar_dense: reads a value on the host (.item(), float(t), int(t), bool(t), if t:)",
    "is_nonzero: reads a value on the host (bool(t))",
    "equal: reads a value on the host (torch.equal)",
    "allclose: reads a value on the host",
    "nonzero: output shape depends on the data",
    "argwhere: output shape depends on the data",
    "masked_select: output shape depends on the data",
    "_unique: output shape depends on the data",
    "_unique2: output shape depends on the data",
    "unique_dim: output shape depends on the data",
    "unique_consecutive: output shape depends on the data",
    "unique_dim_consecutive: output shape depends on the data",
    "bincount: output shape depends on the data (its largest value)",
)

_INDEXING = _ops("index", "_index_put_impl_", "index_put", "index_put_")
#: repeat_interleave with a tensor of repeats: where its output_size argument sits (without it the size is data's).
_REPEAT_OUTPUT_SIZE = {op: position for op, position in (
    (getattr(aten.repeat_interleave, "Tensor", None), 1), (getattr(aten.repeat_interleave, "self_Tensor", None), 3),
) if op is not None}


def _mask_indices(args: tuple) -> bool:
    """Whether an indexing op's index list holds a boolean (or uint8) mask."""
    if len(args) < 2 or not isinstance(args[1], (list, tuple)):
        return False
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1])


#: Ops that make a tensor from Python values (torch.tensor, torch.as_tensor of a list).
_FROM_HOST = {packet for packet in (getattr(aten, "lift_fresh", None), getattr(aten, "lift_fresh_copy", None))
              if packet is not None}


class DataDependentOpError(RuntimeError):
    """An op of the per-frame path read a value on the host or made a data-dependent shape."""


class SyncGuard(TorchDispatchMode):
    """Counts every op dispatched while active; fails (``strict``) or records on data-dependent ones.

    Attributes: ``ops`` (count), ``by_op`` (Counter of op names), ``violations`` (op, why, where), ``transfers``
    (copies between devices, e.g. a download; none on a CPU-only run), ``uploads`` (host data entering the path:
    tensors made from Python values, ``torch.tensor(...)``, and copies from the CPU to a device; a CUDA graph cannot
    hold them). ``torch.from_numpy`` dispatches nothing, so on a CPU-only run only the first kind is seen."""

    def __init__(self, strict: bool = True) -> None:
        super().__init__()
        self.strict = strict
        self.ops = 0
        self.transfers = 0
        self.uploads = 0
        self.upload_sites: List[str] = []
        self.by_op: Counter = Counter()
        self.violations: List[Dict[str, str]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        self.by_op[str(func.overloadpacket.__name__)] += 1
        why = self._violation(func, args, kwargs)
        if why is not None:
            where = _caller()
            self.violations.append({"op": str(func), "why": why, "where": where})
            if self.strict:
                raise DataDependentOpError(f"{func}: {why} at {where}")
        if func in (aten._to_copy.default, aten.copy_.default) and self._crosses_devices(func, args, kwargs):
            self.transfers += 1
            source = args[1] if func is aten.copy_.default else args[0]
            if source.device.type == "cpu":
                self._upload()
        elif func.overloadpacket in _FROM_HOST:
            self._upload()
        return func(*args, **kwargs)

    def _upload(self) -> None:
        self.uploads += 1
        self.upload_sites.append(_caller())

    @staticmethod
    def _violation(func, args: tuple, kwargs: dict) -> Optional[str]:
        why = DATA_DEPENDENT.get(func)
        if why is not None:
            return why
        if func in _INDEXING and _mask_indices(args):
            return "boolean-mask indexing: output shape depends on the data (use torch.where / masked ops)"
        position = _REPEAT_OUTPUT_SIZE.get(func)
        if position is not None and kwargs.get("output_size") is None \
                and (len(args) <= position or args[position] is None):
            return "repeat_interleave without output_size: output shape depends on the data"
        return None

    @staticmethod
    def _crosses_devices(func, args: tuple, kwargs: dict) -> bool:
        if func is aten.copy_.default:
            return args[0].device != args[1].device
        target = kwargs.get("device")
        return target is not None and torch.device(target) != args[0].device


def _caller() -> str:
    """The innermost frame outside torch and this module: where the op was written."""
    torch_dir = torch.__file__.rsplit("/", 1)[0]
    for frame in reversed(traceback.extract_stack()[:-3]):
        if not frame.filename.startswith(torch_dir) and not frame.filename.endswith("sync_guard.py"):
            return f"{frame.filename}:{frame.lineno} ({frame.name})"
    return "?"


def count_ops(fn, *args: Any, **kwargs: Any) -> Dict[str, int]:
    """Run ``fn`` once under a non-strict :class:`SyncGuard`: {"ops", "data_dependent", "transfers"} (for the
    benchmarks' tables)."""
    with SyncGuard(strict=False) as guard:
        fn(*args, **kwargs)
    return {"ops": guard.ops, "data_dependent": len(guard.violations), "transfers": guard.transfers,
            "uploads": guard.uploads}
