"""Inference backends: the same frames give the same depth as eager fp32, on the CPU here and on CUDA where there is
one; auto picks by the documented rule; missing runtimes and wrong devices get errors that say what to do."""

import sys

import numpy as np
import pytest
import torch
from helpers import tiny_model

from space_clip_ros import DepthEstimator
from space_clip_ros.export import depth_errors
from space_clip_ros.inference import BackendUnavailableError, EagerBackend, StaticShapeBackend, choose_backend
from space_clip_ros.synthetic import KITTI_K, KITTI_SIZE

FP32_MAX_REL = 1e-4   # fp32 backends: max |a - b| / max |b|
HALF_MEAN_REL = 1e-2  # fp16 / bf16: mean relative depth error

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/device_check.sh)")


def _frames(seed=0):
    rng = np.random.default_rng(seed)
    camera = [rng.integers(0, 256, (375, 1242, 3), dtype=np.uint8) for _ in range(3)]
    other = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    return camera, other


@pytest.fixture(scope="module")
def reference(clip_tower):
    """Eager fp32 on the CPU: depth for one frame, a camera batch with focal scales, and a mixed batch."""
    estimator = DepthEstimator(tiny_model(clip_tower), device="cpu", backend="eager")
    camera, other = _frames()
    return {
        "single": estimator(camera[0]),
        "batch": estimator(camera, fx=[700.0, KITTI_K[0], 900.0]),
        "mixed": estimator([camera[0], other], output_size=(60, 200)),
    }


def _run(estimator, batch=True):
    """The reference's cases; without ``batch`` only those of batch 1 (a compiled model compiles again for each new
    batch size: about a minute each on a GPU's cold cache)."""
    camera, other = _frames()
    out = {"single": estimator(camera[0]), "mixed": estimator([camera[0], other], output_size=(60, 200))}
    if batch:
        out["batch"] = estimator(camera, fx=[700.0, KITTI_K[0], 900.0])
    return out


def _assert_close(got, reference, precision):
    for key in reference:
        expected = reference[key] if isinstance(reference[key], list) else [reference[key]]
        actual = got[key] if isinstance(got[key], list) else [got[key]]
        for a, b in zip(actual, expected, strict=True):
            assert a.shape == b.shape and a.dtype == np.float32
            errors = depth_errors(a, b)
            if precision == "fp32":
                assert errors["max_rel"] <= FP32_MAX_REL, (key, errors)
            else:
                assert errors["mean_rel"] <= HALF_MEAN_REL, (key, errors)


@pytest.mark.parametrize("backend, precision", [
    ("eager", "fp32"), ("compile", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32"),
    ("eager", "bf16"), ("openvino", "bf16"),
])
def test_cpu_backends_match_eager_fp32(clip_tower, reference, backend, precision):
    if backend in ("onnxruntime", "openvino"):
        extra = "onnx" if backend == "onnxruntime" else backend
        pytest.importorskip(backend, reason=f"pip install 'space_clip_ros[{extra}]'")
    try:
        estimator = DepthEstimator(tiny_model(clip_tower), device="cpu", precision=precision, backend=backend)
    except BackendUnavailableError as error:
        if "no bf16 support" in str(error):
            pytest.skip(str(error))
        raise
    assert estimator.backend_name == backend
    _assert_close(_run(estimator), reference, precision)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_runtime_backends_can_release_the_torch_weights(clip_tower, reference, backend):
    """release_weights: the runtime keeps its copy, the torch model's weights are freed; depth is unchanged, running
    the torch model says why it cannot; torch backends keep their weights."""
    pytest.importorskip(backend)
    model = tiny_model(clip_tower)
    estimator = DepthEstimator(model, device="cpu", backend=backend, release_weights=True)
    assert all(p.numel() == 0 for p in model.parameters()) and all(b.numel() == 0 for b in model.buffers())
    _assert_close(_run(estimator), reference, "fp32")
    assert estimator.trained is False and estimator.focal_scale(KITTI_K[0], KITTI_SIZE[1]) == pytest.approx(1.0)
    with pytest.raises(RuntimeError, match=f"released \\(the {backend} backend runs its own copy\\)"):
        model(torch.zeros(1, 3, 224, 224))
    kept = tiny_model(clip_tower)
    DepthEstimator(kept, device="cpu", backend="eager", release_weights=True)
    assert all(p.numel() > 0 for p in kept.parameters())


def test_static_shapes_bucket_chunk_and_evict_like_eager(clip_tower):
    """The cudagraph backend's static-shape logic, run without capture on the CPU: 11 frames go as 8 + a bucket of 4,
    results equal eager, and only the newest programs are kept."""
    model = tiny_model(clip_tower)
    eager = EagerBackend(tiny_model(clip_tower), torch.device("cpu"), torch.float32)
    static = StaticShapeBackend(model, torch.device("cpu"), torch.float32, max_programs=2)
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (48, 80, 3), dtype=np.uint8) for _ in range(11)]
    scales = list(np.linspace(0.5, 2.0, 11))
    with torch.inference_mode():
        expected = eager.infer(frames, (30, 50), scales)
        got = static.infer(frames, (30, 50), scales)
        assert got.shape == (11, 30, 50)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        assert static.program_keys() == [("frames", 8, 48, 80, (30, 50)), ("frames", 4, 48, 80, (30, 50))]
        assert static.programs() == ["b8 80x48->50x30", "b4 80x48->50x30"]  # what /diagnostics says
        # Stale padding from the 8-batch must not leak into a smaller batch; the output is a copy.
        first = static.infer(frames[:3], (30, 50), None)
        torch.testing.assert_close(first, eager.infer(frames[:3], (30, 50), None), rtol=1e-5, atol=1e-5)
        kept = first.clone()
        static.infer(frames[3:6], (30, 50), None)
        torch.testing.assert_close(first, kept)
        assert len(static.program_keys()) == 2  # least recently used dropped
        pixels = eager.pixel_values(torch.from_numpy(np.stack(frames)))
        torch.testing.assert_close(static.forward(pixels), eager.forward(pixels), rtol=1e-5, atol=1e-5)
    assert static.bucket(1) == 1 and static.bucket(3) == 4 and static.bucket(8) == 8
    with pytest.raises(ValueError, match="larger than the largest bucket"):
        static.bucket(9)


def test_mixed_sizes_take_the_backends_own_frame_path_per_group(clip_tower):
    """DepthEstimator groups a mixed batch by (input size, output size) and sends each group through the backend's
    frame path (the programs a CUDA-graph backend captures), keeping the frames' order; the numbers are eager's."""
    estimator = DepthEstimator(tiny_model(clip_tower), device="cpu", backend="eager")
    reference = DepthEstimator(tiny_model(clip_tower), device="cpu", backend="eager")
    estimator.backend = StaticShapeBackend(tiny_model(clip_tower), torch.device("cpu"), torch.float32)
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in
              [(48, 80, 3), (40, 96, 3), (48, 80, 3), (48, 80, 3)]]
    sizes = [(48, 80), (40, 96), (24, 40), (48, 80)]
    got = estimator.predict_tensor(frames, sizes, [1.0, 2.0, 0.5, 1.5])
    assert estimator.backend.program_keys() == [("frames", 2, 48, 80, (48, 80)), ("frames", 1, 40, 96, (40, 96)),
                                                ("frames", 1, 48, 80, (24, 40))]
    for i, depth in enumerate(got):
        expected = reference.predict_tensor([frames[i]], [sizes[i]], [[1.0, 2.0, 0.5, 1.5][i]])[0]
        torch.testing.assert_close(depth, expected, rtol=1e-5, atol=1e-5)


def test_auto_rule_on_the_cpu(monkeypatch):
    from space_clip_ros.inference import registry

    cpu = torch.device("cpu")
    available = {"openvino": True, "onnxruntime": True}
    monkeypatch.setattr(registry, "module_available", lambda name: available[name])
    bf16 = {"support": True}
    monkeypatch.setattr(registry.base, "openvino_has_bf16", lambda: bf16["support"])
    assert choose_backend(cpu, torch.float32)[0] == "openvino"
    assert choose_backend(cpu, torch.bfloat16)[0] == "openvino"
    bf16["support"] = False  # a processor without AVX512-BF16 or AMX: OpenVINO would refuse bf16
    name, reason = choose_backend(cpu, torch.bfloat16)
    assert name == "eager" and "no bf16 support in OpenVINO" in reason
    assert choose_backend(cpu, torch.float32)[0] == "openvino"
    available["openvino"] = False
    assert choose_backend(cpu, torch.float32)[0] == "onnxruntime"
    assert choose_backend(cpu, torch.bfloat16)[0] == "eager"
    available["onnxruntime"] = False
    name, reason = choose_backend(cpu, torch.float32)
    assert name == "eager" and "space_clip_ros[openvino]" in reason
    assert choose_backend(torch.device("cuda"), torch.float16)[0] == "cudagraph"


def test_auto_is_the_default_and_says_why(clip_tower):
    estimator = DepthEstimator(tiny_model(clip_tower), device="cpu")
    assert estimator.backend_name == choose_backend(torch.device("cpu"), torch.float32)[0]
    assert estimator.backend_reason.startswith("auto: ")


@pytest.mark.parametrize("backend, extra", [("openvino", "openvino"), ("onnxruntime", "onnx")])
def test_a_missing_runtime_names_the_extra(clip_tower, monkeypatch, backend, extra):
    monkeypatch.setitem(sys.modules, backend, None)  # import now raises ImportError
    with pytest.raises(BackendUnavailableError, match=rf"pip install 'space_clip_ros\[{extra}\]'"):
        DepthEstimator(tiny_model(clip_tower), device="cpu", backend=backend)


def test_wrong_device_precision_or_name(clip_tower):
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="'cudagraph' needs a CUDA device"):
            DepthEstimator(tiny_model(clip_tower), device="cpu", backend="cudagraph")
    pytest.importorskip("onnxruntime")
    with pytest.raises(BackendUnavailableError, match="runs fp32 on the CPU"):
        DepthEstimator(tiny_model(clip_tower), device="cpu", precision="bf16", backend="onnxruntime")
    with pytest.raises(ValueError, match="backend must be one of"):
        DepthEstimator(tiny_model(clip_tower), device="cpu", backend="tensorrt")


def test_cli_takes_a_backend(clip_tower, tmp_path, capsys):
    from space_clip_ros import save_checkpoint
    from space_clip_ros.cli import main

    path = save_checkpoint(tiny_model(clip_tower), tmp_path / "m.pt", provenance={"trained": True})
    assert main(["--checkpoint", str(path), "--device", "cpu", "--backend", "eager", "--out", str(tmp_path)]) == 0
    assert "backend eager" in capsys.readouterr().out
    assert main(["--checkpoint", str(path), "--device", "cpu", "--backend", "nope", "--out", str(tmp_path)]) == 2


# ---------------------------------------------------------------------- CUDA (skipped without a GPU)
# Compiling costs about a minute per new graph on a cold cache: one estimator per (backend, precision, compile) for
# the whole module, and one inductor cache for the run (conftest), so each precision compiles once. bf16 runs its
# graphs uncompiled (not a default anywhere; the capture is what it checks).
COMPILES = pytest.mark.compiles
CUDA_CASES = [
    ("eager", "fp32", None), pytest.param("compile", "fp32", None, marks=COMPILES), ("cudagraph", "fp32", False),
    ("eager", "fp16", None), pytest.param("cudagraph", "fp16", True, marks=COMPILES), ("cudagraph", "bf16", False),
]


@pytest.fixture(scope="module")
def cuda_estimators(clip_tower):
    made = {}

    def get(backend, precision, compile=None):
        key = (backend, precision, compile)
        if key not in made:
            options = {} if compile is None else {"compile": compile}
            made[key] = DepthEstimator(tiny_model(clip_tower), device="cuda", precision=precision, backend=backend,
                                       **options)
        return made[key]

    return get


@CUDA
@pytest.mark.parametrize("backend, precision, compile", CUDA_CASES)
def test_cuda_backends_match_eager_fp32(cuda_estimators, reference, monkeypatch, backend, precision, compile):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # fp32 means fp32 for this comparison
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    estimator = cuda_estimators(backend, precision, compile)
    assert estimator.backend_name == backend
    compiled = bool(compile) or backend == "compile"
    if compile:
        assert estimator.compile_state() == "compiled"  # compiled before the first frame (compile=True)
    expected = {k: v for k, v in reference.items() if not compiled or k != "batch"}
    _assert_close(_run(estimator, batch=not compiled), expected, precision)
    _assert_close(_run(estimator, batch=not compiled), expected, precision)  # replays give the same numbers


@CUDA
def test_cudagraph_captures_once_per_shape_and_replays(cuda_estimators):
    estimator = cuda_estimators("cudagraph", "fp16", False)  # capture and replay; compiling is tested above
    camera, _ = _frames(seed=5)
    first = estimator(camera[0])
    for _ in range(3):
        np.testing.assert_array_equal(estimator(camera[0]), first)
    keys = estimator.backend.program_keys()
    assert ("frames", 1, 375, 1242, (375, 1242)) in keys
    estimator(camera)  # 3 frames -> bucket 4
    assert ("frames", 4, 375, 1242, (375, 1242)) in estimator.backend.program_keys()
    assert all(program.graph is not None for program in estimator.backend._programs.values())


@CUDA
@COMPILES
def test_auto_on_cuda_serves_at_once_and_compiles_in_the_background(clip_tower, reference):
    """The node's default on CUDA: fp16 CUDA graphs, the first depth from the uncompiled graph, then the compiled
    one swapped in (the fp16 graph is a cache hit when the cudagraph-fp16 case compiled it earlier in the run)."""
    estimator = DepthEstimator(tiny_model(clip_tower), device="cuda")
    assert estimator.backend_name == "cudagraph" and estimator.dtype == torch.float16
    camera, _ = _frames()
    _assert_close({"single": estimator(camera[0])}, {"single": reference["single"]}, "fp16")
    assert estimator.wait_compiled(timeout=170), estimator.compile_state()
    assert estimator.compile_state() == "compiled"
    _assert_close(_run(estimator, batch=False), {k: v for k, v in reference.items() if k != "batch"}, "fp16")


def test_onnx_exports_are_cached_by_model_fingerprint(clip_tower, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from space_clip_ros.inference import runtimes

    calls = []
    real = runtimes.export_onnx
    monkeypatch.setattr(runtimes, "export_onnx", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setenv("SPACE_CLIP_ROS_CACHE", str(tmp_path / "cache"))
    frame = _frames()[1]
    first = DepthEstimator(tiny_model(clip_tower), device="cpu", backend="onnxruntime")(frame)
    again = DepthEstimator(tiny_model(clip_tower), device="cpu", backend="onnxruntime")(frame)
    assert len(calls) == 1 and len(list((tmp_path / "cache").glob("*.onnx"))) == 1  # the second start reused it
    np.testing.assert_array_equal(first, again)
    other = tiny_model(clip_tower, seed=1)  # other weights: another export, never the first one's file
    DepthEstimator(other, device="cpu", backend="onnxruntime")
    assert len(calls) == 2 and len(list((tmp_path / "cache").glob("*.onnx"))) == 2
    (next((tmp_path / "cache").glob("*.onnx"))).write_bytes(b"damaged")  # a damaged entry is exported again
    DepthEstimator(tiny_model(clip_tower), device="cpu", backend="onnxruntime")
    DepthEstimator(other, device="cpu", backend="onnxruntime")
    assert len(calls) == 3 and not list((tmp_path / "cache").glob(".*.tmp.onnx"))
    monkeypatch.setenv("SPACE_CLIP_ROS_CACHE", "off")
    DepthEstimator(tiny_model(clip_tower), device="cpu", backend="onnxruntime")
    assert len(calls) == 4 and len(list((tmp_path / "cache").glob("*.onnx"))) == 2
