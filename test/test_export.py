"""space-clip-export: an ONNX file with the documented contract that ONNX Runtime runs to PyTorch's numbers, in
operators TensorRT parses."""

import json

import numpy as np
import pytest
import torch
from helpers import tiny_model

from space_clip_ros import save_checkpoint
from space_clip_ros.export import TENSORRT_OPERATORS, depth_errors, export_onnx, main, onnx_metadata

onnx = pytest.importorskip("onnx", reason="pip install 'space_clip_ros[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="pip install 'space_clip_ros[onnx]'")


@pytest.fixture(scope="module")
def model(clip_tower):
    return tiny_model(clip_tower)


def _eager(model, pixels, size):
    with torch.inference_mode():
        return model(torch.from_numpy(pixels), output_size=size).numpy()


def _run(path, pixels):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["depth"], {"pixel_values": pixels})[0]


def _pixels(batch, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, 64, 64)).astype(np.float32)


def test_cli_exports_the_checkpoint_contract(model, tmp_path, capsys):
    checkpoint = save_checkpoint(model, tmp_path / "m.pt", provenance={"trained": True})
    out = tmp_path / "model.onnx"
    assert main([str(checkpoint), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "within the max_rel tolerance" in printed and "trtexec --onnx=" in printed

    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ["pixel_values"]
    assert [o.name for o in proto.graph.output] == ["depth"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 64, 64]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {17}

    size = tuple(model.preprocessing.output_size)  # 352x704, the checkpoint's
    for batch in (1, 3):  # dynamic batch
        pixels = _pixels(batch, batch)
        got = _run(out, pixels)
        assert got.shape == (batch, 1, *size) and got.dtype == np.float32
        assert depth_errors(got, _eager(model, pixels, size))["max_rel"] <= 1e-4

    meta = onnx_metadata(out)
    assert json.loads(meta["space_clip_ros.mean"]) == pytest.approx(list(model.preprocessing.mean))
    assert json.loads(meta["space_clip_ros.std"]) == pytest.approx(list(model.preprocessing.std))
    assert json.loads(meta["space_clip_ros.output_size"]) == list(size)
    assert json.loads(meta["space_clip_ros.trained"]) is True


def test_fp16_variant_keeps_float32_io_and_stays_within_tolerance(model, tmp_path):
    fp16 = export_onnx(model, tmp_path / "fp16.onnx", output_size=(40, 80), precision="fp16")
    proto = onnx.load(str(fp16))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = [t for t in proto.graph.initializer if len(t.dims) >= 2]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    pixels = _pixels(2)
    assert depth_errors(_run(fp16, pixels), _eager(model, pixels, (40, 80)))["mean_rel"] <= 1e-2


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_every_operator_is_one_tensorrt_parses(model, tmp_path, precision):
    proto = onnx.load(str(export_onnx(model, tmp_path / "m.onnx", output_size=(40, 80), precision=precision)))
    operators = {node.op_type for node in proto.graph.node}
    assert operators <= TENSORRT_OPERATORS, operators - TENSORRT_OPERATORS


def test_dynamo_exporter_gives_the_same_contract(model, tmp_path):
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")
    path = export_onnx(model, tmp_path / "dynamo.onnx", output_size=(40, 80), exporter="dynamo")
    proto = onnx.load(str(path))
    assert {node.op_type for node in proto.graph.node} <= TENSORRT_OPERATORS
    for batch in (1, 2):
        pixels = _pixels(batch)
        assert depth_errors(_run(path, pixels), _eager(model, pixels, (40, 80)))["max_rel"] <= 1e-4


def test_export_errors_say_what_to_do(model, tmp_path, monkeypatch, capsys):
    assert main([str(tmp_path / "missing.pt"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    with pytest.raises(ValueError, match="export precision must be one of"):
        export_onnx(model, tmp_path / "m.onnx", precision="int8")
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'space_clip_ros\[onnx\]'"):
        export_onnx(model, tmp_path / "m.onnx")
