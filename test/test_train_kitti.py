"""train/ on KITTI: files, Velodyne projection, crops, metrics, losses, the data pipeline and the evaluation
commands, on a tree the tests write."""

import json

import evaluate
import export_gt_depth
import numpy as np
import pytest
import torch
from kitti_tree import DATE
from space_clip_train.data import collate, read_list
from space_clip_train.kitti import (
    EIGEN_TEST,
    KittiDepth,
    crop_mask,
    project_velodyne,
    read_depth_png,
    velodyne_depth,
    velodyne_to_image_matrix,
    write_depth_png,
)
from space_clip_train.losses import SpaceClipLoss, silog_loss, ssim_loss
from space_clip_train.metrics import compute_errors, evaluate_image


def eval_kitti(argv):
    """``python train/evaluate.py --dataset kitti ARGV``."""
    return evaluate.main(["--dataset", "kitti", *argv])


# ------------------------------------------------------------------------------------------------ projection
def test_velodyne_projection_against_hand_computed_points():
    # Camera looks along Velodyne x; P = K [I | 0] with fx = fy = 100, cx = 50, cy = 20; 100x40 image.
    r = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], float)
    projection = np.array([[100, 0, 50, 0], [0, 100, 20, 0], [0, 0, 1, 0]], float) @ np.vstack(
        [np.hstack([r, np.zeros((3, 1))]), [0, 0, 0, 1]])
    points = np.array([
        [10.0, 0.0, 0.0, 1],     # straight ahead: u = 50, v = 20 -> pixel (49, 19), z 10
        [10.0, -1.0, 0.5, 1],    # cam (1, -0.5, 10): u = 60, v = 15 -> pixel (59, 14)
        [5.0, -0.5, 0.25, 1],    # the same ray, nearer: the same pixel, wins with z 5
        [20.0, 2.0, 0.0, 1],     # cam (-2, 0, 20): u = 40, v = 20 -> pixel (39, 19)
        [-5.0, 0.0, 0.0, 1],     # behind the scanner: dropped
        [10.0, -10.0, 0.0, 1],   # u = 150: outside the image
        [9.0, 0.0, 0.0049, 1],   # cam (0, -0.0049, 9): v = 19.946, rounds to 20: the first's pixel, nearer
    ], dtype=np.float32)
    depth = project_velodyne(points, projection, (40, 100))
    expected = np.zeros((40, 100), np.float32)
    expected[19, 49] = 9.0
    expected[14, 59] = 5.0
    expected[19, 39] = 20.0
    np.testing.assert_allclose(depth, expected, rtol=1e-6)
    # --vel-depth: the Velodyne x instead of camera z (equal here, so put the camera 1 m behind: T = (0, 0, 1)).
    projection_shifted = projection.copy()
    projection_shifted[:, 3] = [50.0, 20.0, 1.0]  # K @ T
    depth_z = project_velodyne(points[:1], projection_shifted, (40, 100))
    depth_x = project_velodyne(points[:1], projection_shifted, (40, 100), vel_depth=True)
    assert depth_z[19, 49] == pytest.approx(11.0) and depth_x[19, 49] == pytest.approx(10.0)


def test_velodyne_ground_truth_of_the_tree_matches_the_rendered_depth(tree):
    projection, size = velodyne_to_image_matrix(tree.raw / DATE)
    assert size == tree.size
    image = next(iter(tree.depth))
    gt = velodyne_depth(tree.raw, image)
    dense = tree.depth[image]
    v, u = np.nonzero(gt)
    assert len(v) > 500
    # KITTI's pixel convention puts a point that projects to u at column round(u) - 1.
    np.testing.assert_allclose(gt[v, u], dense[v + 1, u + 1], rtol=1e-4)


def test_export_gt_depth_writes_an_npz_eval_reads(tree, tmp_path):
    out = tmp_path / "gt.npz"
    assert export_gt_depth.main(["--data-path", str(tree.raw), "--filenames", str(tree.velodyne_list),
                                 "--out", str(out)]) == 0
    data = np.load(out, allow_pickle=False)
    images = data["images"].tolist()
    assert len(images) == 3 and images[0].endswith("image_02/data/0000000000.png")
    np.testing.assert_array_equal(data["depth_00001"], velodyne_depth(tree.raw, images[1]))
    assert export_gt_depth.main(["--data-path", str(tmp_path), "--filenames", str(tree.velodyne_list),
                                 "--out", str(tmp_path / "x.npz")]) == 2


# ----------------------------------------------------------------------------------------------------- crops
def test_crops_on_the_kitti_frame_size():
    garg = crop_mask((375, 1242), "garg")
    rows, cols = np.nonzero(garg)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (153, 371, 44, 1197)
    eigen = crop_mask((375, 1242), "eigen")
    rows, cols = np.nonzero(eigen)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (124, 342, 44, 1197)
    assert crop_mask((375, 1242), "none") is None
    with pytest.raises(ValueError, match="garg, eigen or none"):
        crop_mask((10, 10), "kb")


# --------------------------------------------------------------------------------------------------- metrics
def test_each_metric_on_hand_made_arrays():
    gt = np.array([2.0, 4.0, 10.0, 20.0])
    pred = np.array([1.05, 5.0, 10.0, 30.0])
    m = compute_errors(gt, pred)
    assert m["abs_rel"] == pytest.approx((0.95 / 2 + 1 / 4 + 0 + 10 / 20) / 4)
    assert m["sq_rel"] == pytest.approx((0.9025 / 2 + 1 / 4 + 0 + 100 / 20) / 4)
    assert m["rmse"] == pytest.approx(np.sqrt((0.9025 + 1 + 0 + 100) / 4))
    logs = np.log(pred) - np.log(gt)
    assert m["rmse_log"] == pytest.approx(np.sqrt(np.mean(logs ** 2)))
    # ratios 1.905, 1.25, 1, 1.5: < 1.25 only the exact one (1.25 is not < 1.25); < 1.5625 three; < 1.953 all
    assert (m["a1"], m["a2"], m["a3"]) == (0.25, 0.75, 1.0)
    assert m["silog"] == pytest.approx(100 * np.sqrt(np.mean(logs ** 2) - np.mean(logs) ** 2))
    assert m["log10"] == pytest.approx(np.mean(np.abs(np.log10(gt) - np.log10(pred))))
    scaled = compute_errors(gt, gt * 2)
    assert scaled["silog"] == pytest.approx(0, abs=1e-5) and scaled["abs_rel"] == pytest.approx(1.0)


def test_evaluate_image_masks_range_crop_and_clamps():
    gt = np.zeros((375, 1242), np.float32)
    gt[200, 600] = 10.0          # inside both crops
    gt[130, 600] = 10.0          # inside Eigen only
    gt[300, 600] = 90.0          # beyond 80 m: not evaluated
    pred = np.full((375, 1242), 12.0, np.float32)
    assert evaluate_image(gt, pred, crop="garg")["abs_rel"] == pytest.approx(0.2)
    pred[130, 600] = 100.0       # clamped to 80 -> |10 - 80| / 10 = 7
    assert evaluate_image(gt, pred, crop="eigen")["abs_rel"] == pytest.approx((0.2 + 7.0) / 2)
    # A prediction at another size is resized to the ground truth.
    assert evaluate_image(gt, np.full((100, 200), 12.0, np.float32), crop="garg")["abs_rel"] == pytest.approx(0.2)
    assert evaluate_image(np.zeros((375, 1242), np.float32), pred) is None
    with pytest.raises(ValueError, match="352x704"):
        evaluate_image(gt, pred, protocol="spaceclip")


# ------------------------------------------------------------------------------------------------------ losses
def test_silog_and_ssim_losses():
    torch.manual_seed(0)
    gt = torch.rand(2, 1, 32, 48) * 40 + 1
    mask = torch.rand(2, 1, 32, 48) > 0.3
    gt = torch.where(mask, gt, torch.zeros_like(gt))
    # A global scale changes only the (1 - 0.85) mean term: 10 sqrt(0.15) |log 2|.
    assert float(silog_loss(gt * 2, gt, mask)) == pytest.approx(10 * np.sqrt(0.15) * np.log(2), rel=1e-4)
    assert float(ssim_loss(gt.clone(), gt, mask)) == pytest.approx(0.0, abs=1e-4)
    assert float(ssim_loss(torch.rand_like(gt) * 40, gt, mask)) > 0.3
    loss = SpaceClipLoss(0.5, [0.1, 0.0])
    pred = (gt * 1.1 + 0.5).requires_grad_()
    aux = [torch.full((2, 1, 8, 12), 5.0, requires_grad=True), torch.full((2, 1, 16, 24), 5.0, requires_grad=True)]
    out = loss(pred, gt, aux)
    expected = 0.5 * out["silog"] + 0.5 * out["ssim"] + 0.1 * silog_loss(aux[0], gt, mask & (gt < 80) & (gt > 1e-3))
    assert float(out["loss"].detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    out["loss"].backward()
    assert pred.grad.abs().sum() > 0 and aux[0].grad.abs().sum() > 0 and aux[1].grad is None


def test_paper_loss_version_follows_the_first_code_version():
    """Unbiased SILog variance, gt > min_depth only (no 80 m cap), SSIM normalised by the whole batch's gt range."""
    torch.manual_seed(1)
    gt = torch.rand(2, 1, 24, 40) * 90 + 1  # some pixels beyond 80 m: the paper's mask keeps them
    gt = torch.where(torch.rand_like(gt) > 0.3, gt, torch.zeros_like(gt))
    pred = gt * torch.exp(0.2 * torch.randn_like(gt)) + 0.1
    mask = gt > 1e-3
    g = torch.log(pred[mask]) - torch.log(gt[mask])
    n = g.numel()
    unbiased = ((g - g.mean()) ** 2).sum() / (n - 1)
    expected_silog = 10 * torch.sqrt(unbiased + 0.15 * g.mean() ** 2)
    assert float(silog_loss(pred, gt, mask, unbiased=True)) == pytest.approx(float(expected_silog), rel=1e-5)
    assert float(silog_loss(pred, gt, mask, unbiased=True)) != pytest.approx(float(silog_loss(pred, gt, mask)),
                                                                             rel=1e-7)
    # Batch-wide range: one sample's scale changes the other's SSIM term.
    lo, hi = gt.min(), gt.max()
    assert float(lo) == 0.0
    batch = ssim_loss(pred, gt, mask, batch_range=True)
    scaled = (pred - lo) / (hi - lo)
    manual = ssim_loss(scaled.clamp(0, 1) * (hi - lo) + lo, gt, mask, batch_range=True)
    assert float(batch) == pytest.approx(float(manual), rel=1e-5)
    assert float(batch) != pytest.approx(float(ssim_loss(pred, gt, mask)), rel=1e-4)
    paper = SpaceClipLoss(0.5, version="paper")(pred, gt)
    assert float(paper["silog"]) == pytest.approx(float(expected_silog), rel=1e-5)
    assert float(paper["ssim"]) == pytest.approx(float(batch), rel=1e-5)
    release = SpaceClipLoss(0.5)(pred, gt)
    assert float(release["silog"]) != pytest.approx(float(paper["silog"]), rel=1e-5)
    with pytest.raises(ValueError, match="loss version must be one of"):
        SpaceClipLoss(version="v2")


def test_paper_protocol_median_scales_without_crop():
    from space_clip_train.metrics import evaluate_image

    gt = np.zeros((375, 1242), np.float32)
    gt[::7, ::5] = np.linspace(2, 70, gt[::7, ::5].size).reshape(gt[::7, ::5].shape)
    pred = np.full((352, 704), 3.0, np.float32)
    from space_clip_train.data import pil_resize

    small = pil_resize(gt, (352, 704), "nearest")
    valid = (small > 1e-3) & (small < 80)
    scaled = 3.0 * np.median(small[valid]) / 3.0
    got = evaluate_image(gt, pred, "paper")
    np.testing.assert_allclose(got["abs_rel"], np.mean(np.abs(small[valid] - scaled) / small[valid]), rtol=1e-6)
    # A constant factor on the prediction changes nothing (scale recovered); the metric protocols do change.
    assert evaluate_image(gt, pred * 7, "paper")["abs_rel"] == pytest.approx(got["abs_rel"], rel=1e-9)
    assert evaluate_image(gt, pred * 7, "spaceclip")["abs_rel"] != pytest.approx(
        evaluate_image(gt, pred, "spaceclip")["abs_rel"])
    # No crop: ground truth in the top rows counts.
    top = gt.copy()
    top[100:] = 0  # rows 0..93 of the 352x704 map: above the Eigen crop (rows 117..321)
    assert evaluate_image(top, pred, "paper") is not None and evaluate_image(top, pred, "spaceclip") is None
    with pytest.raises(ValueError, match="paper protocol needs 352x704"):
        evaluate_image(gt, np.ones((10, 10), np.float32), "paper")


# ------------------------------------------------------------------------------------------------ lists, data
def test_lists_in_both_formats(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("a/b/image_02/data/0000000001.png b/proj_depth/groundtruth/image_02/0000000001.png 721.5377\n"
                    "a/c/image_02/data/0000000002.png None 721.5377\n\n"
                    "2011_09_26/2011_09_26_drive_0002_sync 69 l\n")
    s = read_list(path)
    assert [x.line_no for x in s] == [1, 2, 4]
    assert s[0].depth.endswith("0000000001.png") and s[0].focal == pytest.approx(721.5377)
    assert s[1].depth is None
    assert s[2].image == "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png"
    assert len(read_list(EIGEN_TEST)) == 697
    assert sum(x.depth is not None for x in read_list(EIGEN_TEST)) == 652


def test_depth_png_round_trip_and_errors(tmp_path):
    depth = np.array([[0.0, 1.5], [79.99609375, np.nan]], np.float32)
    write_depth_png(tmp_path / "d.png", depth)
    np.testing.assert_array_equal(read_depth_png(tmp_path / "d.png"), [[0, 1.5], [79.99609375, 0]])
    import cv2
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="uint16"):
        read_depth_png(tmp_path / "rgb.png")


def test_training_items_and_a_corrupt_line_is_counted(tree, tmp_path):
    lines = tree.train_list.read_text().splitlines()
    bad = tmp_path / "train.txt"
    (tree.raw / "broken.png").write_bytes(b"not a png")
    bad.write_text("\n".join(lines[:2] + ["missing/image_02/data/x.png missing/x.png 721.5",
                                          "broken.png " + lines[0].split()[1] + " 721.5"]) + "\n")
    data = KittiDepth(bad, tree.raw, tree.gt, "train", (64, 64), augment=None)
    data.augment.crop = (48, 96)
    batch = collate([data[i] for i in range(4)])
    assert batch["n"] == 2 and batch["pixel_values"].shape == (2, 3, 64, 64)
    assert batch["depth"].shape == (2, 1, 48, 96) and "image" not in batch  # nothing trains on a full image
    data.record_skips(batch)
    summary = data.skips.summary()
    assert "skipped 2 line(s)" in summary and "line 3" in summary and "line 4" in summary
    assert "cannot read image" in summary
    strict = KittiDepth(bad, tree.raw, tree.gt, "train", (64, 64), strict=True)
    with pytest.raises(FileNotFoundError, match="line 3.*--strict"):
        strict[2]


# ---------------------------------------------------------------------------------------------- eval_kitti.py
def _write_predictions(tree, folder, fn, suffix):
    for line in tree.test_list.read_text().split("\n"):
        if not line:
            continue
        image_rel = line.split()[0]
        pred = fn(tree.annotated[image_rel], tree.depth[image_rel])
        path = folder / image_rel.replace(".png", suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npy":
            np.save(path, pred.astype(np.float32))
        else:
            write_depth_png(path, pred)


def test_pred_dir_equal_to_gt_over_1_1_gives_the_exact_abs_rel(tree, tmp_path, capsys):
    _write_predictions(tree, tmp_path / "preds", lambda sparse, dense: dense / 1.1, ".npy")
    out = tmp_path / "r.json"
    assert eval_kitti(["--pred-dir", str(tmp_path / "preds"), "--filenames", str(tree.test_list),
                            "--gt-path", str(tree.gt), "--crop", "none", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert set(results) >= {"abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "silog", "log10",
                            "n_images"}
    # The annotated map is the dense depth rounded to 1/256 m: AbsRel 1 - 1/1.1 up to that rounding.
    assert results["abs_rel"] == pytest.approx(1 - 1 / 1.1, abs=2e-4)
    assert results["n_images"] == 3 and results["a1"] == 1.0
    assert "AbsRel" in capsys.readouterr().out
    # Exactly, when predictions are made from the annotated values themselves (PNG predictions, uint16 x 256).
    _write_predictions(tree, tmp_path / "exact", lambda sparse, dense: sparse / 1.1, ".npy")
    assert eval_kitti(["--pred-dir", str(tmp_path / "exact"), "--filenames", str(tree.test_list),
                            "--gt-path", str(tree.gt), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["abs_rel"] == pytest.approx(1 - 1 / 1.1, rel=1e-6)


def test_pred_dir_png_spaceclip_protocol_and_missing_predictions(tree, tmp_path, capsys):
    from space_clip_train.data import pil_resize

    _write_predictions(tree, tmp_path / "preds", lambda sparse, dense: pil_resize(dense, (352, 704), "nearest"),
                       ".png")
    out = tmp_path / "r.json"
    assert eval_kitti(["--pred-dir", str(tmp_path / "preds"), "--filenames", str(tree.test_list),
                            "--gt-path", str(tree.gt), "--protocol", "spaceclip", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["abs_rel"] < 0.02
    # The full-resolution predictions are not 352x704: a clear error.
    _write_predictions(tree, tmp_path / "full", lambda sparse, dense: dense, ".npy")
    assert eval_kitti(["--pred-dir", str(tmp_path / "full"), "--filenames", str(tree.test_list),
                            "--gt-path", str(tree.gt), "--protocol", "spaceclip"]) == 2
    assert "352x704" in capsys.readouterr().err
    # Under the paper protocol predictions of any size are resized bilinearly to 352x704, as the authors' first
    # version resized its output: the same numbers as predictions written at 352x704 that way.
    from space_clip_train.metrics import resize_prediction

    _write_predictions(tree, tmp_path / "bilinear", lambda sparse, dense: resize_prediction(dense, (352, 704)), ".npy")
    results = []
    for folder in ("full", "bilinear"):
        assert eval_kitti(["--pred-dir", str(tmp_path / folder), "--filenames", str(tree.test_list),
                                "--gt-path", str(tree.gt), "--protocol", "paper", "--out", str(out)]) == 0
        results.append(json.loads(out.read_text()))
    assert results[0]["abs_rel"] == pytest.approx(results[1]["abs_rel"], rel=1e-6) and results[0]["n_images"] == 3
    # One prediction missing: counted and named; --strict makes it an error.
    missing = next((tmp_path / "full").rglob("0000000001.npy"))
    missing.unlink()
    assert eval_kitti(["--pred-dir", str(tmp_path / "full"), "--filenames", str(tree.test_list),
                            "--gt-path", str(tree.gt), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["n_images"] == 2
    assert "skipped 1 line(s)" in capsys.readouterr().err
    assert eval_kitti(["--pred-dir", str(tmp_path / "full"), "--filenames", str(tree.test_list),
                            "--gt-path", str(tree.gt), "--strict"]) == 2


def test_pred_dir_against_velodyne_npz(tree, tmp_path):
    npz = tmp_path / "gt.npz"
    export_gt_depth.main(["--data-path", str(tree.raw), "--filenames", str(tree.velodyne_list), "--out", str(npz)])
    preds = tmp_path / "preds"
    for i, image_rel in enumerate(np.load(npz)["images"].tolist()):
        gt = np.load(npz)[f"depth_{i:05d}"]
        (preds / image_rel).parent.mkdir(parents=True, exist_ok=True)
        np.save(preds / image_rel.replace(".png", ".npy"), np.where(gt > 0, gt / 1.1, 1.0).astype(np.float32))
    out = tmp_path / "r.json"
    assert eval_kitti(["--pred-dir", str(preds), "--filenames", str(tree.velodyne_list), "--gt-path", str(npz),
                            "--out", str(out)]) == 0
    assert json.loads(out.read_text())["abs_rel"] == pytest.approx(1 - 1 / 1.1, rel=1e-5)


def test_rotated_crop_equals_rotating_the_whole_frame():
    """The training crop of the rotated frame, computed on the crop only, has the pixels of PIL's whole-frame rotation
    (bicubic, as the image is rotated); angle 0 is a plain crop."""
    from PIL import Image
    from space_clip_train.data import rotated_crop

    rgb = np.random.default_rng(4).integers(0, 256, (375, 1242, 3), dtype=np.uint8)
    for angle in (0.73, -0.99, 0.2):
        for x, y in ((0, 0), (538, 23), (100, 10)):
            whole = np.asarray(Image.fromarray(rgb).rotate(angle, resample=Image.BICUBIC, fillcolor=(0, 0, 0)))
            np.testing.assert_array_equal(rotated_crop(rgb, angle, (x, y, 704, 352), Image.BICUBIC, (0, 0, 0)),
                                          whole[y:y + 352, x:x + 704])
    np.testing.assert_array_equal(rotated_crop(rgb, 0.0, (5, 7, 20, 10), Image.BICUBIC, (0, 0, 0)), rgb[7:17, 5:25])


def test_opencv_rotation_backend_has_the_same_geometry_on_kitti_frames():
    """rotate_backend opencv: the rotation of the pil backend through cv2.warpAffine; on the real KITTI sample frames
    within 0.5 grey levels on average and 20 at most where the kernel reads inside the frame (OpenCV's cubic kernel
    is a little sharper); a one-pixel shift of the geometry would give far more."""
    from pathlib import Path

    from PIL import Image
    from space_clip_train.data import _affine_matrix, read_rgb, rotated_crop

    frames = sorted((Path(__file__).resolve().parents[1] / "space_clip_ros" / "data" / "kitti_sample").rglob("*.png"))
    assert frames
    rng = np.random.default_rng(5)
    for path in frames[:3]:
        rgb = read_rgb(path)
        h, w = rgb.shape[:2]
        for _ in range(4):
            angle, x, y = rng.uniform(-1, 1), int(rng.integers(0, w - 704)), int(rng.integers(0, h - 352))
            pil = rotated_crop(rgb, angle, (x, y, 704, 352), Image.BICUBIC, (0, 0, 0)).astype(int)
            cv = rotated_crop(rgb, angle, (x, y, 704, 352), Image.BICUBIC, (0, 0, 0), "opencv").astype(int)
            a, b, c, d, e, f = _affine_matrix((h, w), angle, x, y)
            ys, xs = np.mgrid[0:352, 0:704] + 0.5
            u, v = a * xs + b * ys + c, d * xs + e * ys + f
            inside = (u > 3) & (u < w - 3) & (v > 3) & (v < h - 3)
            diff = np.abs(pil - cv).max(axis=2)
            assert diff.mean() < 0.5 and diff[inside].max() <= 20, (path.name, angle, diff.mean())
            shifted = np.abs(pil[:, 1:] - cv[:, :-1]).max(axis=2)
            assert shifted.mean() > 4 * diff.mean()


def test_colour_and_quantisation_by_table_equal_the_authors_per_pixel_arithmetic():
    """The colour augmentation and the authors' quantisation to uint8, computed on the 256 levels and looked up, give
    the very values of their per-pixel float32 arithmetic (same random draws, flipped or not); so does the
    normalisation after the resize."""
    from space_clip_train.data import apply_levels, clip_input, colour_table, pil_resize

    from space_clip_ros.model import CLIP_MEAN, CLIP_STD

    rng = np.random.default_rng(0)
    jittered = 0
    for trial in range(12):
        rgb = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
        src = rgb[:, ::-1] if trial % 2 else rgb
        got = apply_levels(src, colour_table(np.random.default_rng(trial), True))
        draws = np.random.default_rng(trial)
        image = src.astype(np.float32) / 255.0
        if draws.random() > 0.5:
            jittered += 1
            image = image ** draws.uniform(0.9, 1.1)
            image = image * draws.uniform(0.9, 1.1)
            image = np.clip(image * draws.uniform(0.9, 1.1, size=3).astype(np.float32), 0, 1)
        quantised = (image * 255).astype(np.uint8)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, quantised)
        small = pil_resize(quantised, (24, 24), "bicubic").astype(np.float32) / 255.0
        expected = ((small - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)).transpose(2, 0, 1)
        np.testing.assert_array_equal(clip_input(got, (24, 24), CLIP_MEAN, CLIP_STD), expected)
    assert 0 < jittered < 12  # both branches ran
    plain = apply_levels(rgb, colour_table(np.random.default_rng(1), False))
    np.testing.assert_array_equal(plain, (rgb.astype(np.float32) / 255.0 * 255).astype(np.uint8))


def test_training_items_are_the_authors_pipeline_and_depend_on_seed_epoch_and_line_only(tree):
    """A training item equals the authors' order of operations done by hand (the whole frame rotated by PIL, then
    cropped, flipped, colour-jittered in float32, quantised, resized, normalised) with the same draws from the item's
    generator; the same (epoch, line) gives the same item in any process, another epoch or seed another."""
    import random

    from PIL import Image
    from space_clip_train.data import Augment

    from space_clip_ros.model import CLIP_MEAN, CLIP_STD

    data = KittiDepth(tree.train_list, tree.raw, tree.gt, "train", (64, 64), augment=Augment(crop=(48, 96)), seed=3)
    random.seed(0)
    np.random.seed(0)  # the global streams play no part
    for epoch, index in [(0, 0), (1, 0), (0, 2), (5, 3)]:
        item = data[(epoch, index)]
        rgb, depth = data.load(index)
        draws = np.random.default_rng((3, epoch, index))
        angle = (draws.random() - 0.5) * 2.0
        y, x = int(draws.integers(0, rgb.shape[0] - 48 + 1)), int(draws.integers(0, rgb.shape[1] - 96 + 1))
        image = np.asarray(Image.fromarray(rgb).rotate(angle, resample=Image.BICUBIC, fillcolor=(0, 0, 0)))
        gt = np.asarray(Image.fromarray(depth).rotate(angle, resample=Image.NEAREST, fillcolor=0))
        image, gt = image[y:y + 48, x:x + 96], gt[y:y + 48, x:x + 96]
        if draws.random() > 0.5:
            image, gt = image[:, ::-1], gt[:, ::-1]
        image = image.astype(np.float32) / 255.0
        if draws.random() > 0.5:
            image = image ** draws.uniform(0.9, 1.1)
            image = image * draws.uniform(0.9, 1.1)
            image = np.clip(image * draws.uniform(0.9, 1.1, size=3).astype(np.float32), 0, 1)
        small = np.asarray(Image.fromarray((image * 255).astype(np.uint8)).resize((64, 64), Image.BICUBIC))
        small = small.astype(np.float32) / 255.0
        expected = ((small - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)).transpose(2, 0, 1)
        np.testing.assert_array_equal(item["pixel_values"], expected)
        np.testing.assert_array_equal(item["depth"][0], gt)
        np.testing.assert_array_equal(data[(epoch, index)]["pixel_values"], item["pixel_values"])
    assert not np.array_equal(data[(0, 0)]["pixel_values"], data[(1, 0)]["pixel_values"])
    other = KittiDepth(tree.train_list, tree.raw, tree.gt, "train", (64, 64), augment=Augment(crop=(48, 96)), seed=4)
    assert not np.array_equal(other[(0, 0)]["pixel_values"], data[(0, 0)]["pixel_values"])


def test_evaluate_py_is_the_one_entry_and_names_the_missing_dataset(capsys):
    from space_clip_train.datasets import DATASETS

    assert evaluate.COMMANDS["kitti"] is not None and set(evaluate.COMMANDS) == set(DATASETS)  # every dataset
    with pytest.raises(SystemExit):
        evaluate.main(["--checkpoint", "x.pt"])
    assert "--dataset kitti|nyu|folder is required" in capsys.readouterr().err
    assert eval_kitti(["--pred-dir", "nowhere", "--gt-path", "nowhere"]) == 2  # --dataset kitti reaches KITTI's
    assert "evaluate.py: error: --gt-path nowhere is neither" in capsys.readouterr().err


def test_a_protocol_with_its_own_crop_settles_the_crop_from_the_table(capsys):
    from argparse import Namespace

    from space_clip_train.evaluation import settle_crop

    cases = (("kitti", "paper", "garg", "none"), ("kitti", "spaceclip", "garg", "eigen"),
             ("kitti", "standard", "eigen", "eigen"), ("nyu", "spaceclip", "eigen", "none"))
    for dataset, protocol, asked, used in cases:
        args = Namespace(protocol=protocol, crop=asked)
        settle_crop(args, dataset)
        assert args.crop == used, (dataset, protocol)
        note = capsys.readouterr().err
        assert (f"uses crop {used}" in note) == (asked != used), note


def test_png_frames_read_by_opencv_are_the_pixels_pil_reads(tmp_path):
    """8-bit RGB PNGs (KITTI's frames: the three shipped ones) are decoded by OpenCV, with PIL's very pixels; other
    PNGs (grey, alpha, palette) go to PIL as before."""
    import glob
    from pathlib import Path

    from PIL import Image
    from space_clip_train.data import read_rgb

    root = Path(__file__).resolve().parents[1] / "space_clip_ros" / "data" / "kitti_sample"
    frames = sorted(glob.glob(str(root / "*" / "*" / "image_02" / "data" / "*.png")))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8)).save(tmp_path / "grey.png")
    Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)).save(tmp_path / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).convert("P").save(tmp_path / "palette.png")
    for path in frames + [str(tmp_path / n) for n in ("grey.png", "rgba.png", "palette.png")]:
        with Image.open(path) as img:
            expected = np.asarray(img.convert("RGB"))
        got = read_rgb(path)
        assert got.shape == expected.shape and got.dtype == np.uint8
        np.testing.assert_array_equal(got, expected)
    assert len(frames) == 3
