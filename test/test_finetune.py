"""finetune.py on a robot's recording: bag -> space-clip-bag2dataset -> a decoder fine-tuned from a checkpoint, whose
checkpoints carry the robot's camera (the node's focal transfer is 1.0 there); also from a KITTI list; the errors."""

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("rosbags", reason="rosbags not installed: pip install -e '.[bags]'")
pytest.importorskip("sensor_msgs", reason="bag2dataset's image decoders need sensor_msgs: pip install -e '.[ros]'")

import finetune  # noqa: E402
import robot_bag as rb  # noqa: E402
from space_clip_train.folder import training_size  # noqa: E402

from space_clip_ros import DepthEstimator, load_checkpoint  # noqa: E402
from space_clip_ros.checkpoint import read_checkpoint  # noqa: E402
from space_clip_ros.ros.bag2dataset import Options, convert  # noqa: E402
from space_clip_ros.synthetic import KITTI_K, KITTI_SIZE, render_scene  # noqa: E402

SIZE = (96, 288)
FX = KITTI_K[0] * 288 / KITTI_SIZE[1]


@pytest.fixture(scope="module")
def robot_set(tmp_path_factory):
    """A training folder from an RGB-D recording the test writes: 12 frames at 10 Hz, val = every 3rd 0.4 s block."""
    tmp = tmp_path_factory.mktemp("robot")
    k = np.array([[FX, 0, KITTI_K[2] * 288 / KITTI_SIZE[1]], [0, FX, KITTI_K[3] * 96 / KITTI_SIZE[0]], [0, 0, 1]])
    messages = []
    for i in range(12):
        t = (i + 1) * 100_000_000
        rgb, depth = render_scene(size=SIZE, intrinsics=(k[0, 0], k[1, 1], k[0, 2], k[1, 2]), forward=1.5 * i)
        messages += [("/cam/camera_info", t, rb.camera_info(t, "cam_optical", SIZE, k)),
                     ("/cam/image", t, rb.image(t, "cam_optical", rgb)),
                     ("/depth/camera_info", t, rb.camera_info(t, "cam_optical", SIZE, k)),
                     ("/depth/image", t, rb.depth_image(t, "cam_optical", np.where(depth < 60, depth, 0)))]
    bag = rb.write_bag(tmp / "bag", messages)
    out = tmp / "set"
    summary = convert(bag, out, Options("/cam/image", "/cam/camera_info", "/depth/image", val_fraction=1 / 3,
                                        val_block_s=0.4))
    assert summary.written == 12 and summary.val >= 2
    return out


def _run(*args):
    return finetune.main([*map(str, args), "--device", "cpu", "--workers", "0", "--batch-size", "2"])


def test_finetune_starts_from_the_checkpoint_and_carries_the_robots_camera(robot_set, checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run("--data", robot_set, "--init", checkpoint, "--out", out, "--max-steps", "2") == 0
    assert "AbsRel" in capsys.readouterr().out
    init, best = read_checkpoint(checkpoint), read_checkpoint(out / "best.pt")
    assert best["model_config"] == init["model_config"]  # the checkpoint's architecture and tower
    assert best["training_camera"] == {"fx": pytest.approx(FX), "width": 288}
    assert tuple(best["preprocessing"]["output_size"]) == training_size(*SIZE) == (80, 256)
    assert best["provenance"]["initialised_from"] == str(checkpoint)
    changed = [k for k in init["decoder"] if not torch.equal(init["decoder"][k], best["decoder"][k])]
    assert changed  # two steps moved the decoder away from where it started
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["dataset"] == "folder" and resolved["crop"] == [80, 256] and resolved["lr"] == 5e-5
    estimator = DepthEstimator(load_checkpoint(out / "best.pt"), device="cpu", backend="eager")
    assert estimator.focal_scale(FX, 288) == pytest.approx(1.0)  # the node on this robot's camera: no rescaling
    assert estimator(np.zeros((96, 288, 3), np.uint8)).shape == (96, 288)
    # --resume continues the run.
    assert _run("--data", robot_set, "--resume", out / "last.pt", "--out", out, "--max-steps", "3") == 0
    assert read_checkpoint(out / "last.pt")["training_state"]["step"] == 3


def test_finetune_on_a_kitti_list(tree, checkpoint, tmp_path):
    out = tmp_path / "kitti"
    assert _run("--dataset", "kitti", "--data-path", tree.raw, "--gt-path", tree.gt, "--filenames", tree.train_list,
                "--filenames-eval", tree.test_list, "--init", checkpoint, "--out", out, "--max-steps", "1",
                "--set", "crop=[48, 96]", "--set", "aux_weights=[]") == 0
    best = read_checkpoint(out / "best.pt")
    assert best["training_camera"]["width"] == 1242 and best["model_config"] == read_checkpoint(checkpoint)[
        "model_config"]


def test_finetune_errors_say_what_to_pass(robot_set, checkpoint, tmp_path, capsys):
    assert _run("--data", robot_set, "--out", tmp_path / "a") == 2
    assert "give --init CHECKPOINT.pt" in capsys.readouterr().err
    assert _run("--init", checkpoint, "--out", tmp_path / "b") == 2
    assert "give --data DIR" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("train.txt", "camera.yaml"):
        (empty / name).write_text((robot_set / name).read_text())
    (empty / "val.txt").write_text("")
    assert _run("--data", empty, "--init", checkpoint, "--out", tmp_path / "c") == 2
    assert "val.txt is empty" in capsys.readouterr().err
    (empty / "camera.yaml").unlink()
    assert _run("--data", empty, "--init", checkpoint, "--out", tmp_path / "d") == 2
    assert "has no camera.yaml" in capsys.readouterr().err


def test_evaluate_folder_reports_metrics_per_frame_with_each_alignment(robot_set, checkpoint, tmp_path, capsys):
    """evaluate.py --dataset folder: the node's view of each val frame (full image, its fx) against the recording's
    depth; --align none|median|scale, the table, JSON and the per-frame CSV agree with a computation by hand."""
    import csv
    import json

    import evaluate
    from space_clip_train.data import read_list
    from space_clip_train.evaluate_folder import align_prediction
    from space_clip_train.folder import FolderDepth
    from space_clip_train.metrics import evaluate_image

    estimator = DepthEstimator(load_checkpoint(checkpoint), device="cpu")
    dataset = FolderDepth(robot_set / "val.txt", robot_set, None, "eval")
    lines = read_list(robot_set / "val.txt")
    for how in ("none", "median", "scale"):
        out, table = tmp_path / f"{how}.json", tmp_path / f"{how}.csv"
        assert evaluate.main(["--dataset", "folder", "--data", str(robot_set), "--checkpoint", str(checkpoint),
                              "--device", "cpu", "--align", how, "--out", str(out), "--csv", str(table)]) == 0
        assert f"align {how}" in capsys.readouterr().out
        rows = list(csv.DictReader(open(table)))
        assert [r["image"] for r in rows] == [s.image for s in lines]
        by_hand = []
        for index, (sample, row) in enumerate(zip(lines, rows, strict=True)):
            rgb, gt = dataset.load(index)
            pred = estimator(rgb, fx=sample.focal, output_size=gt.shape)
            scale = align_prediction(pred, gt, how, 0.1, 80.0)
            assert float(row["scale"]) == pytest.approx(scale, rel=1e-5)
            assert scale == 1.0 if how == "none" else scale != 1.0
            by_hand.append(evaluate_image(gt, pred * scale, "standard", "none", 0.1, 80.0, "folder"))
            assert float(row["abs_rel"]) == pytest.approx(by_hand[-1]["abs_rel"], rel=1e-4)
        result = json.loads(out.read_text())
        assert result["align"] == how and result["n_images"] == len(lines)
        assert result["abs_rel"] == pytest.approx(np.mean([m["abs_rel"] for m in by_hand]), rel=1e-4)


def test_align_prediction_scale_is_robust_where_the_median_is_not():
    from space_clip_train.evaluate_folder import align_prediction

    rng = np.random.default_rng(0)
    gt = rng.uniform(2, 40, (60, 80)).astype(np.float32)
    pred = gt / 2
    bad = rng.random(gt.shape) < 0.3  # 30% of the ground truth wrong (reflections, lidar behind glass)
    gt_bad = np.where(bad, rng.uniform(0.5, 3, gt.shape), gt).astype(np.float32)
    assert align_prediction(pred, gt_bad, "scale", 0.1, 80.0) == pytest.approx(2.0, rel=0.02)
    assert abs(align_prediction(pred, gt_bad, "median", 0.1, 80.0) - 2.0) > 0.1
    assert align_prediction(pred, gt, "none", 0.1, 80.0) == 1.0


def test_evaluate_folder_errors_say_what_to_pass(tmp_path, checkpoint, capsys):
    import evaluate

    assert evaluate.main(["--dataset", "folder", "--data", str(tmp_path), "--checkpoint", str(checkpoint)]) == 2
    assert "camera.yaml does not exist" in capsys.readouterr().err
