"""ONNX export of a SPACE-CLIP model, for ONNX Runtime, OpenVINO and TensorRT (``trtexec``).

    space-clip-export space_clip_kitti.pt --format onnx --out space_clip_kitti.onnx [--precision fp16]

The graph: input ``pixel_values`` float32 (B, 3, S, S), RGB in [0, 1] normalised with the checkpoint's mean/std
(written into the file's metadata); output ``depth`` float32 (B, 1, H, W) metres at the checkpoint's output size
(KITTI: 352x704) unless ``--output-size`` says otherwise. The batch is dynamic. ``--precision fp16`` keeps float32
input and output and computes in float16 inside (weights stored as float16): the variant for GPU runtimes.
Opset 17 by default, the highest TensorRT 8.6 (JetPack 6.0) reads; TensorRT 10 reads it too.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .model import SpaceClip

Size = Tuple[int, int]

#: ONNX operators a TensorRT 8.6+ parser supports, of those a SPACE-CLIP export may contain (a test checks every
#: operator of an export is listed here; TensorRT's own operator table is the source).
TENSORRT_OPERATORS = frozenset({
    "Add", "BatchNormalization", "Cast", "Concat", "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Div",
    "Equal", "Erf", "Expand", "Flatten", "Gather", "Gemm", "Identity", "LayerNormalization", "MatMul", "Mul", "Pow",
    "Range", "ReduceMean", "Relu", "Reshape", "Resize", "Shape", "Sigmoid", "Slice", "Softmax", "Sqrt", "Squeeze",
    "Sub", "Tanh", "Transpose", "Unsqueeze", "Where",
})

DEFAULT_OPSET = 17
EXPORT_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}
EXPORTERS = ("torchscript", "dynamo")


class _ExportGraph(nn.Module):
    """pixel_values float32 -> model in ``dtype`` -> depth float32 at ``output_size``."""

    def __init__(self, model: SpaceClip, output_size: Optional[Size], dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.output_size = output_size
        self.dtype = dtype

    def forward(self, pixel_values: Tensor) -> Tensor:
        depth = self.model(pixel_values.to(self.dtype), output_size=self.output_size)
        return depth.float()


def export_onnx(
    model: SpaceClip,
    path: Union[str, Path],
    output_size: Optional[Sequence[int]] = None,
    precision: str = "fp32",
    opset: int = DEFAULT_OPSET,
    max_batch: int = 64,
    exporter: str = "torchscript",
) -> Path:
    """Write ``model`` as an ONNX file at ``path`` and return the path.

    Args:
        model: a :class:`SpaceClip` (left unchanged: a copy is exported).
        output_size: (H, W) of ``depth``; default the model's native size (its input size).
        precision: ``fp32`` or ``fp16`` (float32 in and out, float16 inside).
        opset: ONNX opset (17 for TensorRT 8.6 / JetPack 6.0; newer runtimes read it too).
        max_batch: the largest batch the dynamic batch axis promises (``dynamo`` exporter only).
        exporter: ``torchscript`` (PyTorch's tracing exporter: opset 17 natively, about 1 s for a small model and
            7 s for ViT-B/16 on 2 CPU cores) or ``dynamo`` (``torch.export``-based; about 10 s more, and needs
            onnxscript). Both give the same graph contract; the tests check both against PyTorch.
    """
    if precision not in EXPORT_PRECISIONS:
        raise ValueError(f"export precision must be one of {sorted(EXPORT_PRECISIONS)}, got {precision!r}")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    try:
        import onnx
    except ImportError as error:
        raise ImportError("ONNX export needs the 'onnx' package: pip install 'space_clip_ros[onnx]'") from error

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = EXPORT_PRECISIONS[precision]
    size = None if output_size is None else (int(output_size[0]), int(output_size[1]))
    copy = _cpu_copy(model, dtype)
    graph = _ExportGraph(copy, size, dtype).eval()
    side = copy.input_size
    example = (torch.zeros(2, 3, side, side),)
    names = {"input_names": ["pixel_values"], "output_names": ["depth"], "opset_version": int(opset)}
    with _quiet_export():
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=int(max_batch))
            program = torch.onnx.export(graph, example, None, dynamo=True, dynamic_shapes=({0: batch},),
                                        optimize=True, **names)
            proto = program.model_proto
        else:
            buffer = io.BytesIO()
            torch.onnx.export(graph, example, buffer, dynamo=False, do_constant_folding=True,
                              dynamic_axes={"pixel_values": {0: "batch"}, "depth": {0: "batch"}}, **names)
            proto = onnx.load_from_string(buffer.getvalue())
    _set_metadata(proto, model, size, precision)
    onnx.save(proto, str(path))
    return path


def _cpu_copy(model: SpaceClip, dtype: torch.dtype) -> SpaceClip:
    import copy

    clone = copy.deepcopy(model).to(device="cpu", dtype=dtype).eval()
    clone.requires_grad_(False)
    return clone


@contextlib.contextmanager
def _quiet_export():
    """The exporter prints progress and warns about tracing-time Python checks; keep a user's terminal clean."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _set_metadata(proto, model: SpaceClip, output_size: Optional[Size], precision: str) -> None:
    prep = model.preprocessing
    side = model.input_size
    meta: Dict[str, str] = {
        "space_clip_ros.input": f"pixel_values float32 (B,3,{side},{side}) RGB in [0,1], (x - mean) / std",
        "space_clip_ros.mean": json.dumps(list(prep.mean)),
        "space_clip_ros.std": json.dumps(list(prep.std)),
        "space_clip_ros.output": "depth float32 (B,1,H,W) metres",
        "space_clip_ros.output_size": json.dumps(list(output_size or (side, side))),
        "space_clip_ros.precision": precision,
        "space_clip_ros.training_camera": json.dumps({"fx": model.training_camera.fx,
                                                      "width": model.training_camera.width}),
        "space_clip_ros.trained": json.dumps(bool(model.provenance.get("trained", False))),
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def onnx_metadata(path: Union[str, Path]) -> Dict[str, str]:
    """The ``space_clip_ros.*`` metadata of an exported file."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


# ---------------------------------------------------------------------- command line
def _parse_size(text: str) -> Size:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 352x704, got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return height, width


def verify_onnx(model: SpaceClip, path: Union[str, Path], output_size: Optional[Size], batch: int = 2,
                seed: int = 0) -> Optional[Dict[str, float]]:
    """Run the file in ONNX Runtime (CPU) and eager fp32 PyTorch on the same random pixel values.

    Returns ``max_rel`` (max |a - b| / max |b|) and ``mean_rel`` (mean |a - b| / |b| over pixels with depth), or None
    when onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    side = model.input_size
    pixels = torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))
    reference_model = _cpu_copy(model, torch.float32)
    with torch.inference_mode():
        reference = reference_model(pixels, output_size=output_size).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["depth"], {"pixel_values": pixels.numpy()})[0]
    return depth_errors(got, reference)


def depth_errors(got, reference) -> Dict[str, float]:
    """``max_rel`` and ``mean_rel`` of ``got`` against ``reference`` (numpy arrays or tensors of equal shape)."""
    import numpy as np

    got = np.asarray(got, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if got.shape != reference.shape:
        raise ValueError(f"shapes differ: {got.shape} vs {reference.shape}")
    diff = np.abs(got - reference)
    scale = float(np.abs(reference).max()) or 1.0
    valid = np.abs(reference) > 1e-3 * scale
    mean_rel = float((diff[valid] / np.abs(reference[valid])).mean()) if valid.any() else 0.0
    return {"max_rel": float(diff.max() / scale), "mean_rel": mean_rel}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="space-clip-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a space_clip_ros checkpoint (.pt)")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="output format (onnx)")
    parser.add_argument("--out", type=Path, required=True, help="the file to write (e.g. model.onnx)")
    parser.add_argument("--precision", default="fp32", choices=sorted(EXPORT_PRECISIONS),
                        help="fp32, or fp16 (float32 in/out, float16 inside; for GPU runtimes)")
    parser.add_argument("--output-size", type=_parse_size,
                        help="HEIGHTxWIDTH of depth (default the checkpoint's output size, 352x704 for KITTI)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--max-batch", type=int, default=64, help="largest batch (dynamo exporter)")
    parser.add_argument("--exporter", default="torchscript", choices=EXPORTERS,
                        help="PyTorch exporter: torchscript (default, fast) or dynamo (torch.export)")
    parser.add_argument("--backbone", help="hub id or local folder overriding the checkpoint's vision tower")
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime comparison with PyTorch")
    args = parser.parse_args(argv)

    from .checkpoint import CheckpointError, load_checkpoint
    from .model import BackboneUnavailableError

    try:
        model = load_checkpoint(args.checkpoint, device="cpu", backbone=args.backbone)
    except (CheckpointError, BackboneUnavailableError, ValueError, OSError) as error:
        print(f"space-clip-export: error: {error}", file=sys.stderr)
        return 2
    size = args.output_size or tuple(model.preprocessing.output_size)
    try:
        path = export_onnx(model, args.out, output_size=size, precision=args.precision, opset=args.opset,
                           max_batch=args.max_batch, exporter=args.exporter)
    except ImportError as error:
        print(f"space-clip-export: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # the exporter's own errors are long; say what failed and where
        print(f"space-clip-export: error: ONNX export failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    side = model.input_size
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {args.precision}, opset {args.opset}): "
          f"pixel_values float32 (B,3,{side},{side}) -> depth float32 (B,1,{size[0]},{size[1]}) metres")
    if not args.no_verify:
        errors = verify_onnx(model, path, size)
        if errors is None:
            print("not verified: onnxruntime is not installed (pip install 'space_clip_ros[onnx]')")
        else:
            limit = 1e-4 if args.precision == "fp32" else 1e-2
            key = "max_rel" if args.precision == "fp32" else "mean_rel"
            ok = errors[key] <= limit
            print(f"onnxruntime vs PyTorch fp32: max rel {errors['max_rel']:.2e}, mean rel {errors['mean_rel']:.2e} "
                  f"({'within' if ok else 'OUTSIDE'} the {key} tolerance {limit:g})")
            if not ok:
                return 1
    print(f"TensorRT: trtexec --onnx={path} --saveEngine={path.with_suffix('.engine')} "
          f"--minShapes=pixel_values:1x3x{side}x{side} --optShapes=pixel_values:1x3x{side}x{side} "
          f"--maxShapes=pixel_values:8x3x{side}x{side}" + (" --fp16" if args.precision == "fp16" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
