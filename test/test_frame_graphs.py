"""The path after the model replayed as one captured program per frame signature (space_clip_ros.node.frame_graphs):
on the CPU the capture is test/graph_replay.py's, which keeps CUDA graphs' rules (Python numbers frozen at
capture, inputs read from the buffers captured, state written where it was). A replayed pipeline must publish
exactly what an eager one does, frame after frame, with alignment and fusion carrying their state."""

import gc

import numpy as np
import pytest
import torch
from graph_replay import FreedInputError, cpu_capture
from helpers import node_aligner, node_fusion
from ros_harness import camera_info_msg
from test_sync_free_frame_path import EVERYTHING, K4, H, W, _lidar, cloud

from space_clip_ros.node.frame_graphs import WARMUP_RUNS, FrameGraphs, KeepState
from space_clip_ros.node.frame_pipeline import CameraModel, FramePipeline, FrameRequest
from space_clip_ros.node.settings import NodeSettings
from space_clip_ros.synthetic import render_scene


def test_the_cpu_capture_keeps_cuda_graph_rules():
    x, state, scale = torch.ones(3), torch.zeros(3), [1.0]

    def step():
        state.add_(x * scale[0])  # a Python number: frozen at capture
        return state * 2

    replay, out = cpu_capture(step)
    assert torch.equal(state, torch.zeros(3))  # a capture runs nothing
    scale[0] = 5.0
    x.fill_(2.0)  # an input buffer: read again by every replay
    replay()
    assert torch.equal(state, torch.full((3,), 2.0)) and torch.equal(out, torch.full((3,), 4.0))
    replay()
    assert torch.equal(state, torch.full((3,), 4.0)) and torch.equal(out, torch.full((3,), 8.0))


def test_keep_state_leaves_no_trace_in_tensors_from_before():
    """What a warm-up before a CUDA capture runs under: the camera's state as it was, what it made as it made it."""
    state = torch.zeros(3)
    with KeepState():
        state.add_(1.0)
        made = state * 2
        made.add_(1.0)
    assert torch.equal(state, torch.zeros(3)) and torch.equal(made, torch.full((3,), 3.0))


def test_a_stamp_given_as_a_python_number_would_be_frozen():
    """Why the path takes its stamps as tensors: the tracker's update with an int stamp, captured, replays the
    stamp of its capture."""
    aligner = node_aligner(time_constant_s=1.0)
    log_scale, fitted = torch.tensor(0.5, dtype=torch.float64), torch.tensor(True)
    aligner.tracker.update_static(0, log_scale, fitted)
    stamp = [1_000_000_000]
    replay, _ = cpu_capture(lambda: aligner.tracker.update_static(stamp[0], log_scale, fitted))
    stamp[0] = 9_000_000_000
    replay()
    assert int(aligner.tracker.last_fit_ns) == 1_000_000_000  # frozen: the reason stamps are device tensors


def _frames(rgb, model, aligner, fusion, buffer, valid, i):
    reference = cloud(buffer, valid)  # projected in the path: captured with the fit
    pose = np.eye(4)
    pose[2, 3] = 0.05 * i  # the camera moves forward: the fusion warps its history every frame
    return [FrameRequest(rgb, (H, W), 1.0, model, EVERYTHING, stamp_ns=(i + 1) * 100_000_000, aligner=aligner,
                         reference=reference, fusion=fusion, pose=pose)]


@pytest.fixture(scope="module")
def estimator(checkpoint):
    from space_clip_ros import DepthEstimator

    return DepthEstimator(str(checkpoint), device="cpu", backend="eager")


def warmed_cpu_capture(fn):
    """As frame_graphs.cuda_graph does it: warm-up runs that must leave no trace, then the capture."""
    with KeepState():
        for _ in range(WARMUP_RUNS):
            fn()
    return cpu_capture(fn)


@pytest.mark.parametrize("capture", [cpu_capture, warmed_cpu_capture])
def test_a_replayed_path_publishes_what_the_eager_path_does(estimator, capture):
    eager, graphed = FramePipeline(estimator), FramePipeline(estimator, FrameGraphs(capture))
    _compare(eager, graphed, exact=True)
    # Frame 0 starts the fusion, frame 1 carries it (a new signature, eager), frame 2 is captured, 3-5 replay.
    assert graphed.graphs.captured == 1


def test_a_replay_of_a_freed_tensor_fails_in_the_emulation():
    """What a real graph would do silently (read memory now someone else's), the CPU emulation reports."""
    held = {"x": torch.ones(3)}
    replay, _ = cpu_capture(lambda: held["x"] * 2)
    replay()
    del held["x"]
    gc.collect()
    with pytest.raises(FreedInputError, match="freed after the capture"):
        replay()


def test_a_replay_never_reads_what_a_camera_let_go(estimator):
    """Caches the path reads may drop or replace their tensors while a captured program lives (the scan's pixel
    indices past 32 camera models, the fusion's rays when the carried camera model changes): each program holds
    what its graph reads, so a replay never reads freed memory and still publishes what eager does."""
    eager, graphed = FramePipeline(estimator), FramePipeline(estimator, FrameGraphs(cpu_capture))
    _compare(eager, graphed, exact=True, between=drop_caches)
    assert graphed.graphs.captured == 1


def drop_caches(i, pipelines, cameras, scribble=None):
    """After the capture (frame 2) and a replay: the pipelines' scan indices and the fusions' rays dropped, as their
    caches do; ``scribble`` (a GPU) then takes the freed memory for something else, so a graph that still read it
    would publish garbage."""
    if i != 3:
        return
    for pipeline in pipelines:
        pipeline._scan_cache.clear()
    for _, fusion in cameras:
        fusion._rays = (None, None)
    gc.collect()
    if scribble is not None:
        scribble()


def test_batches_of_changing_cameras_and_identical_cameras_replay_right(estimator):
    """Which cameras share a batch changes; two identical cameras (same model and size, no alignment or fusion) in
    one batch get a program each, so one replay never overwrites the other's outputs before the download."""
    rgb, _ = render_scene((H, W), K4)
    other = np.ascontiguousarray(rgb[:, ::-1])  # another view: another depth
    model = CameraModel.from_info(camera_info_msg(None, W, H, *K4))
    settings = NodeSettings.from_values({"scan_height": 3})
    eager, graphed = FramePipeline(estimator), FramePipeline(estimator, FrameGraphs(cpu_capture))
    images = {"a": rgb, "b": other}
    for step, names in enumerate(["ab", "ab", "ab", "b", "ab", "a", "ab"]):
        results = {}
        for name, pipeline in (("eager", eager), ("graphed", graphed)):
            frames = [FrameRequest(images[c], (H, W), 1.0, model, EVERYTHING, stamp_ns=(step + 1) * 100_000_000)
                      for c in names]
            results[name], _ = pipeline.run(frames, settings)
        for a, b in zip(results["eager"], results["graphed"], strict=True):
            for field in ("depth", "points", "scan", "points_filtered", "colored"):
                np.testing.assert_array_equal(getattr(b, field), getattr(a, field), err_msg=f"{step} {names} {field}")
        if names == "ab":
            assert not np.array_equal(results["graphed"][0].depth, results["graphed"][1].depth, equal_nan=True)
    assert graphed.graphs.captured == 2  # one program per camera position among identical cameras


def test_a_failed_capture_leaves_the_path_eager_and_says_why(estimator):
    def broken(fn):
        raise RuntimeError("operation not permitted when stream is capturing")

    graphed = FramePipeline(estimator, FrameGraphs(broken))
    _compare(FramePipeline(estimator), graphed, exact=True)  # every frame still right
    assert graphed.graphs.captured == 0
    assert graphed.graphs.state() == "failed, running eagerly: RuntimeError: operation not permitted when stream is " \
                                     "capturing"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/device_check.sh)")
def test_cuda_graphs_of_the_path_publish_what_the_eager_path_does(checkpoint):
    """The path after the model captured as real CUDA graphs publishes what the same path run eagerly does: both
    on one eager estimator (the same depth in, bit for bit), so any difference is the capture's."""
    from space_clip_ros import DepthEstimator
    from space_clip_ros.node.frame_graphs import cuda_graph

    cudagraph = DepthEstimator(str(checkpoint), device="cuda", precision="fp32", backend="cudagraph", compile=False)
    assert FramePipeline(cudagraph).graphs is not None  # the default with the cudagraph backend
    estimator = DepthEstimator(str(checkpoint), device="cuda", precision="fp32", backend="eager")
    eager, graphed = FramePipeline(estimator), FramePipeline(estimator, FrameGraphs(cuda_graph(estimator.device)))
    assert eager.graphs is None
    taken = []

    def scribble():  # blocks of every size the caches held, filled with NaN: the allocator hands out freed ones
        for _ in range(4):
            for numel in (3 * H * W, H * W, 2 * W, W, 3 * 2 * W):
                taken.append(torch.full((numel,), float("nan"), device=estimator.device))

    _compare(eager, graphed, exact=False, between=lambda *a: drop_caches(*a, scribble=scribble))
    assert graphed.graphs.captured == 1 and graphed.graphs.failure is None


def _compare(eager, graphed, exact, between=None):
    rgb, depth = render_scene((H, W), K4)
    model = CameraModel.from_info(camera_info_msg(None, W, H, *K4))
    settings = NodeSettings.from_values({"scan_height": 3, "temporal_filter": "odom", "points_rgb": True,
                                         "scan_min_confidence": 0.2, "points_filtered_min_confidence": 0.2})
    cameras = {name: (node_aligner(min_points=10, time_constant_s=0.5), node_fusion(max_frames=4))
               for name in ("eager", "graphed")}
    for i in range(6):
        if between is not None:
            between(i, (eager, graphed), cameras.values())
        buffer, valid, _ = _lidar(depth, seed=i)  # another reference every frame, in a buffer of one capacity
        results = {}
        for name, pipeline in (("eager", eager), ("graphed", graphed)):
            frames = _frames(rgb, model, *cameras[name], buffer, valid, i)
            [results[name]], _ = pipeline.run(frames, settings)
        a, b = results["eager"], results["graphed"]
        for field in ("depth", "confidence", "colored", "points", "scan"):
            if exact:
                np.testing.assert_array_equal(getattr(b, field), getattr(a, field), err_msg=f"frame {i}: {field}")
            else:  # the same kernels on the same input; only atomics' order may move a last bit
                np.testing.assert_allclose(getattr(b, field).astype(np.float64), getattr(a, field).astype(np.float64),
                                           rtol=1e-5, atol=1e-5 if field != "colored" else 1, equal_nan=True,
                                           err_msg=f"frame {i}: {field}")
        if exact:
            np.testing.assert_array_equal(b.points_filtered, a.points_filtered, err_msg=f"frame {i}")
            assert b.alignment == a.alignment, i
        else:  # the voxel means are sums of atomics (index_add_): their order differs run to run
            assert len(b.points_filtered) == len(a.points_filtered), i
            np.testing.assert_allclose(b.points_filtered, a.points_filtered, rtol=1e-4, atol=1e-4)
            assert b.alignment.applied == pytest.approx(a.alignment.applied, rel=1e-6), i
        assert a.alignment.state == "aligned" and a.alignment.applied != pytest.approx(1.0)  # the scale at work
