"""NYU Depth v2: the release's layout, depth in millimetres, both protocols by hand, train_nyu.py and eval_nyu.py end to
end on a tree the tests write, and checkpoints that carry NYU's camera."""

import json

import evaluate
import numpy as np
import pytest
import train_nyu
import yaml
from helpers import TINY_CHANNELS, TINY_HIDDEN
from nyu_tree import write_nyu_tree
from space_clip_train import config as cfgmod
from space_clip_train import nyu
from space_clip_train.data import collate, read_list
from space_clip_train.metrics import compute_errors, evaluate_image

from space_clip_ros import DepthEstimator, load_checkpoint


def eval_nyu(argv):
    """``python train/evaluate.py --dataset nyu ARGV``."""
    return evaluate.main(["--dataset", "nyu", *argv])


@pytest.fixture(scope="module")
def nyu_tree(tmp_path_factory):
    return write_nyu_tree(tmp_path_factory.mktemp("nyu"))


def test_shipped_lists_and_configs():
    train, test = read_list(nyu.NYU_TRAIN), read_list(nyu.NYU_TEST)
    assert (len(train), len(test)) == (24231, 654)
    assert all(s.focal == 518.8579 and s.depth for s in train + test)
    assert train[0].image.startswith("/") and "sync_depth_" in train[0].depth
    release = cfgmod.resolve_config(cfgmod.CONFIGS / "nyu_release.yaml")
    assert (release.dataset, release.batch_size, release.crop, release.max_depth, release.scheduler,
            release.ema_decay, release.aux_weights, release.final_flip_tta, release.epochs) == (
        "nyu", 32, [480, 640], 10.0, "cosine_warmup", 0.996, [0.1, 0.05, 0.0], True, 20)
    assert (release.model["architecture"], release.eval_protocol) == ("release", "spaceclip")
    paper = cfgmod.resolve_config(cfgmod.CONFIGS / "nyu_paper.yaml")
    assert (paper.dataset, paper.model["architecture"], paper.loss_version, paper.eval_protocol, paper.eval_crop) == (
        "nyu", "paper", "paper", "standard", "eigen")
    with pytest.raises(cfgmod.ConfigError, match="eval_protocol must be one of"):
        cfgmod.resolve_config(cfgmod.CONFIGS / "nyu_release.yaml", ["eval_protocol=paper"])
    with pytest.raises(cfgmod.ConfigError, match="eval_crop must be one of"):
        cfgmod.resolve_config(cfgmod.CONFIGS / "nyu_release.yaml", ["eval_crop=garg"])


def test_dataset_reads_the_release_layout(nyu_tree):
    data = nyu.NyuDepth(nyu_tree.train_list, nyu_tree.root, None, "train")
    assert data.data_root == nyu_tree.root / "sync" and len(data) == 4
    rgb, depth = data.load(0)
    assert rgb.shape == (480, 640, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(depth, nyu_tree.depth[data.samples[0].image])  # mm -> m exactly
    item = data[1]
    assert item["pixel_values"].shape == (3, 224, 224) and item["depth"].shape == (1, 480, 640)
    assert 0 < item["depth"].max() <= 10.0
    test = nyu.NyuDepth(nyu_tree.test_list, nyu_tree.root, None, "eval")
    assert test.data_root == nyu_tree.root / "official_splits" / "test"
    batch = collate([test[0], test[1]])
    assert batch["n"] == 2 and batch["depth"].shape == (2, 1, 480, 640) and batch["image"].shape == (2, 3, 480, 640)
    # The test folder itself works as --data-path; a missing file is skipped with its name, or raised with strict.
    assert len(nyu.NyuDepth(nyu_tree.test_list, nyu_tree.root / "official_splits" / "test", None, "eval")) == 3
    bad = nyu_tree.root / "bad.txt"
    bad.write_text("bathroom/rgb_99999.jpg bathroom/sync_depth_99999.png 518.8579\n")
    assert "rgb_99999.jpg" in nyu.NyuDepth(bad, nyu_tree.root, None, "eval")[0]["skip"]
    with pytest.raises(FileNotFoundError, match="--strict"):
        nyu.NyuDepth(bad, nyu_tree.root, None, "eval", strict=True)[0]
    eight_bit = nyu_tree.root / "official_splits" / "test" / "bathroom" / "sync_depth_00045.png"
    with pytest.raises(ValueError, match="uint16 PNG"):
        nyu.read_depth_png(eight_bit.with_name("rgb_00045.jpg"))


def test_protocols_by_hand():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 12.0, (480, 640)).astype(np.float32)
    gt[::5] = 0
    pred = (gt * rng.uniform(0.8, 1.25, gt.shape)).astype(np.float32) + 0.01
    pred[0, 0] = 50.0  # outside the Eigen crop and beyond 10 m
    # Standard: Eigen crop rows 45:471, cols 41:601, gt in (1e-3, 10), predictions clamped to [1e-3, 10].
    valid = np.zeros_like(gt, dtype=bool)
    valid[45:471, 41:601] = True
    valid &= (gt > 1e-3) & (gt < 10.0)
    expected = compute_errors(gt[valid], np.clip(pred[valid], 1e-3, 10.0))
    got = evaluate_image(gt, pred, "standard", "eigen", 1e-3, 10.0, dataset="nyu")
    assert got == pytest.approx(expected, rel=1e-9)
    # The release's: the whole 480x640 map, no crop.
    whole = (gt > 1e-3) & (gt < 10.0)
    expected = compute_errors(gt[whole], np.clip(pred[whole], 1e-3, 10.0))
    assert evaluate_image(gt, pred, "spaceclip", "eigen", 1e-3, 10.0, dataset="nyu") == pytest.approx(expected)
    with pytest.raises(ValueError, match="480x640 predictions"):
        evaluate_image(gt, pred[:240, :320], "spaceclip", "none", 1e-3, 10.0, dataset="nyu")
    with pytest.raises(ValueError, match="protocol must be one of"):
        evaluate_image(gt, pred, "paper", "none", 1e-3, 10.0, dataset="nyu")
    assert nyu.crop_mask((480, 640), "eigen").sum() == 426 * 560


def _config(tmp_path, tower, **extra):
    data = {"base": str(cfgmod.CONFIGS / "nyu_release.yaml"),
            "model": {"backbone": str(tower), "hidden_size": TINY_HIDDEN, "decoder_channels": list(TINY_CHANNELS),
                      "film_hidden_size": 16},
            "workers": 0, "log_images": 1, "epochs": 1, **extra}
    path = tmp_path / "tiny_nyu.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_train_nyu_end_to_end(clip_tower, nyu_tree, tmp_path):
    out = tmp_path / "run"
    args = ["--config", str(_config(tmp_path, clip_tower)), "--data-path", str(nyu_tree.root), "--filenames",
            str(nyu_tree.train_list), "--filenames-eval", str(nyu_tree.test_list), "--batch-size", "2", "--device",
            "cpu", "--out", str(out), "--max-steps", "2"]
    assert train_nyu.main(args) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    finals = {r["protocol"]: r for r in records if r.get("final")}
    assert set(finals) == {"spaceclip", "standard"} and finals["spaceclip"]["primary"]
    assert finals["spaceclip"]["n_images"] == 3 and finals["spaceclip"]["flip_tta"] is True
    model = load_checkpoint(out / "best.pt")
    assert (model.training_camera.fx, model.training_camera.width) == (518.8579, 640)
    assert tuple(model.preprocessing.output_size) == (480, 640)
    assert model.provenance["dataset"] == "nyu" and model.provenance["trained"] is True
    # The node's focal-length transfer works from NYU's camera: same camera -> 1, a 2x longer lens -> 2x depth.
    estimator = DepthEstimator(model, "cpu")
    assert estimator.focal_scale(518.8579, 640) == pytest.approx(1.0)
    assert estimator.focal_scale(2 * 518.8579, 640) == pytest.approx(2.0)
    # eval_nyu.py on the checkpoint reproduces the final report under both protocols.
    for protocol in ("spaceclip", "standard"):
        result = tmp_path / f"{protocol}.json"
        assert eval_nyu(["--checkpoint", str(out / "best.pt"), "--data-path", str(nyu_tree.root), "--filenames",
                              str(nyu_tree.test_list), "--protocol", protocol, "--flip-tta", "--device", "cpu",
                              "--workers", "0", "--out", str(result)]) == 0
        assert json.loads(result.read_text())["abs_rel"] == pytest.approx(finals[protocol]["abs_rel"], rel=1e-5)
    # Errors that say what to pass.
    assert train_nyu.main(["--config", str(_config(tmp_path, clip_tower))]) == 2


def test_eval_nyu_on_saved_predictions(nyu_tree, tmp_path, capsys):
    preds = tmp_path / "preds"
    samples = read_list(nyu_tree.test_list)
    expected = []
    for sample in samples:
        gt = nyu_tree.depth[sample.image]
        path = preds / sample.image.replace(".jpg", ".npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, gt * 1.1)
        valid = nyu.crop_mask(gt.shape, "eigen") & (gt > 1e-3) & (gt < 10.0)
        expected.append(compute_errors(gt[valid], np.clip(gt[valid] * 1.1, 1e-3, 10.0))["abs_rel"])
    result = tmp_path / "r.json"
    assert eval_nyu(["--pred-dir", str(preds), "--data-path", str(nyu_tree.root), "--filenames",
                          str(nyu_tree.test_list), "--out", str(result)]) == 0
    got = json.loads(result.read_text())
    assert got["abs_rel"] == pytest.approx(np.mean(expected)) and got["n_images"] == 3
    assert 0.09 < got["abs_rel"] <= 0.1 + 1e-9  # 10% too far, less where the 10 m clamp cuts the error
    (preds / samples[0].image.replace(".jpg", ".npy")).unlink()
    assert eval_nyu(["--pred-dir", str(preds), "--data-path", str(nyu_tree.root), "--filenames",
                          str(nyu_tree.test_list), "--strict"]) == 2
    assert "no prediction" in capsys.readouterr().err
