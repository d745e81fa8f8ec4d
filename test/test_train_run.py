"""train_kitti.py end to end on the CPU: a tiny tower, the tests' KITTI tree, checkpoints, resume, errors."""

import json

import evaluate
import numpy as np
import pytest
import torch
import train_kitti
import yaml
from helpers import TINY_CHANNELS, TINY_HIDDEN
from space_clip_train import config as cfgmod

from space_clip_ros import DepthEstimator, load_checkpoint
from space_clip_ros.checkpoint import read_checkpoint


def eval_kitti(argv):
    """``python train/evaluate.py --dataset kitti ARGV``."""
    return evaluate.main(["--dataset", "kitti", *argv])


def _config(tmp_path, tower, architecture="paper", **extra):
    """A config file for the tiny tower, inheriting the paper's recipe."""
    data = {"base": str(cfgmod.DEFAULT_CONFIG),
            "model": {"backbone": str(tower), "hidden_size": TINY_HIDDEN, "decoder_channels": list(TINY_CHANNELS),
                      "film_hidden_size": 16, "architecture": architecture},
            "crop": [48, 96], "workers": 0, "log_images": 2, **extra}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _args(tree, config, out, *more):
    return ["--config", str(config), "--data-path", str(tree.raw), "--gt-path", str(tree.gt),
            "--filenames", str(tree.train_list), "--filenames-eval", str(tree.test_list), "--batch-size", "2",
            "--device", "cpu", "--out", str(out), *more]


def _steps(out):
    return [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]


def _validations(out):
    """metrics.jsonl records of the validations (not the final report's per-protocol records of best.pt)."""
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if not r.get("final")]


def _summaries(out):
    """The final report: best.pt under each protocol."""
    return {r["protocol"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
            if r.get("final")}


def test_two_steps_write_checkpoints_the_node_and_eval_load(clip_tower, tree, tmp_path, capsys):
    out = tmp_path / "run"
    config = _config(tmp_path, clip_tower)
    assert train_kitti.main(_args(tree, config, out, "--max-steps", "2", "--epochs", "3", "--seed", "7")) == 0
    printed = capsys.readouterr().out
    assert "AbsRel" in printed and "stopped after 2 steps" not in printed  # 2 steps = exactly one epoch here
    assert [s["step"] for s in _steps(out)] == [1, 2]
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["seed"] == 7 and resolved["batch_size"] == 2 and resolved["lr"] == 1e-4
    record = _validations(out)[-1]
    assert record["n_images"] == 3 and record["step"] == 2 and 0 < record["abs_rel"]
    # The paper's recipe validates with the paper's protocol; the final summary adds the standard metric numbers.
    assert "final summary" in printed and "compare with the paper's Tables 1-2" in printed
    summaries = _summaries(out)
    assert set(summaries) == {"paper", "standard"}
    assert summaries["paper"]["abs_rel"] == record["abs_rel"]
    assert summaries["standard"]["abs_rel"] != pytest.approx(record["abs_rel"], rel=1e-6)
    assert list((out / "tb").glob("events.out.tfevents.*"))
    for name in ("last.pt", "best.pt"):
        model = load_checkpoint(out / name)
        assert model.provenance["trained"] is True and model.provenance["step"] == 2
        assert model.config.architecture == "paper"
        depth = DepthEstimator(model, device="cpu")(np.zeros((96, 288, 3), np.uint8))
        assert depth.shape == (96, 288) and np.isfinite(depth).all()
    raw = read_checkpoint(out / "last.pt")
    assert raw["training_state"]["step"] == 2 and raw["backbone"]["embedded"] is True
    # Only the decoder trained: the embedded tower equals the one on disk.
    from transformers import CLIPVisionModel
    tower = CLIPVisionModel.from_pretrained(clip_tower).state_dict()
    assert all(torch.equal(raw["backbone"]["state_dict"][k], v) for k, v in tower.items())
    # eval_kitti.py runs the checkpoint and reproduces the validation numbers, under both protocols.
    result = tmp_path / "eval.json"
    for protocol in ("paper", "standard"):
        assert eval_kitti(["--checkpoint", str(out / "best.pt"), "--data-path", str(tree.raw), "--gt-path",
                                str(tree.gt), "--filenames", str(tree.test_list), "--device", "cpu", "--workers",
                                "0", "--protocol", protocol, "--out", str(result)]) == 0
        assert json.loads(result.read_text())["abs_rel"] == pytest.approx(summaries[protocol]["abs_rel"], rel=1e-5)


@pytest.mark.parametrize("stop_at, workers", [(1, ("0", "0", "0")), (2, ("0", "0", "0")), (1, ("2", "1", "2")),
                                              (2, ("2", "2", "2")), (1, ("0", "0", "2"))])
def test_resume_continues_with_identical_losses(clip_tower, tree, tmp_path, stop_at, workers, capsys):
    """Stopped mid-epoch or at an epoch's end and resumed: the losses, weights and EMA of the uninterrupted run. The
    last cases load with persistent DataLoader workers (their iterator made once per run, so a resumed run makes one
    more), in numbers that change between the runs: the items are the same whichever worker, and however many, make
    them, and making an iterator moves no random stream of the training."""
    config = _config(tmp_path, clip_tower, "release", scheduler="cosine_warmup", aux_weights=[0.1, 0.05, 0.0],
                     ema_decay=0.9, eval_every=5)
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train_kitti.main(_args(tree, config, straight, "--epochs", "2", "--workers", workers[0])) == 0
    printed = capsys.readouterr().out  # last.pt after every epoch, validated or not
    assert "last.pt (epoch 1, not validated" in printed and printed.count("validation, epoch") == 1
    assert train_kitti.main(_args(tree, config, split, "--epochs", "2", "--max-steps", str(stop_at),
                                  "--workers", workers[1])) == 0
    assert [s["step"] for s in _steps(split)] == list(range(1, stop_at + 1))
    capsys.readouterr()
    assert train_kitti.main(_args(tree, config, split, "--epochs", "2", "--resume", str(split / "last.pt"),
                                  "--workers", workers[2])) == 0
    assert "warning: resuming with settings" not in capsys.readouterr().out
    a, b = _steps(straight), _steps(split)
    assert [s["step"] for s in b] == [1, 2, 3, 4]
    assert [s["loss"] for s in a] == [s["loss"] for s in b]  # bit-identical
    assert [s["lr"] for s in a] == [s["lr"] for s in b]
    da, db = read_checkpoint(straight / "last.pt"), read_checkpoint(split / "last.pt")
    assert all(torch.equal(da["decoder"][k], db["decoder"][k]) for k in da["decoder"])
    ema_a, ema_b = da["training_state"]["ema"], db["training_state"]["ema"]
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)


def test_a_corrupt_list_line_is_counted_and_reported(clip_tower, tree, tmp_path, capsys):
    lines = tree.train_list.read_text().splitlines()
    bad = tmp_path / "train.txt"
    bad.write_text("\n".join(lines + ["2011_09_26/nowhere/image_02/data/0000000000.png nowhere/x.png 721.5"]) + "\n")
    config = _config(tmp_path, clip_tower)
    out = tmp_path / "run"
    args = _args(tree, config, out, "--epochs", "1", "--seed", "1")
    args[args.index("--filenames") + 1] = str(bad)
    assert train_kitti.main(args) == 0
    printed = capsys.readouterr().out
    assert "1 training line(s) skipped" in printed and "line 5" in printed
    assert _validations(out)[-1]["skipped_train_lines"] == 1
    assert train_kitti.main(args + ["--strict", "--out", str(tmp_path / "strict")]) == 2
    assert "line 5" in capsys.readouterr().err


def test_clear_errors(clip_tower, tree, tmp_path, capsys):
    config = _config(tmp_path, clip_tower)
    assert train_kitti.main(["--config", str(config)]) == 2
    assert "--data-path" in capsys.readouterr().err
    assert train_kitti.main(["--config", str(config), "--data-path", str(tmp_path / "nowhere"), "--gt-path",
                             str(tree.gt)]) == 2
    assert "nowhere is not a folder (the KITTI raw root" in capsys.readouterr().err
    assert train_kitti.main(_args(tree, config, tmp_path / "r", "--filenames", str(tmp_path / "none.txt"))) == 2
    assert "none.txt does not exist" in capsys.readouterr().err
    assert train_kitti.main(_args(tree, config, tmp_path / "r", "--set", "learning_rate=1")) == 2
    assert "unknown config key 'learning_rate'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="not-a-real/clip.*"):
        train_kitti.main(_args(tree, config, tmp_path / "r", "--backbone", "not-a-real/clip"))
    with pytest.raises(SystemExit, match="fp16 needs a CUDA device"):
        train_kitti.main(_args(tree, config, tmp_path / "r", "--precision", "fp16"))


def test_shipped_configs_resolve():
    paper = cfgmod.resolve_config(cfgmod.CONFIGS / "kitti_paper.yaml")
    assert (paper.model["architecture"], paper.loss_version, paper.eval_protocol) == ("paper",) * 3
    assert (paper.epochs, paper.scheduler, paper.step_epochs, paper.step_gamma) == (10, "step", 2, 0.5)
    assert (paper.lr, paper.weight_decay, paper.batch_size, paper.seed, paper.grad_clip,
            paper.w_ssim) == (1e-4, 0.01, 64, 42, 1.0, 0.5)
    release = cfgmod.resolve_config(cfgmod.CONFIGS / "kitti_release.yaml")
    assert (release.epochs, release.scheduler, release.aux_weights, release.ema_decay,
            release.final_flip_tta, release.eval_protocol) == (20, "cosine_warmup", [0.1, 0.05, 0.0], 0.996,
                                                                     True, "spaceclip")
    assert (release.model["architecture"], release.loss_version) == ("release", "release")
    variants = {}
    for name in ("baseline", "film", "structural", "full"):
        cfg = cfgmod.resolve_config(cfgmod.CONFIGS / f"ablation_{name}.yaml")
        assert (cfg.model["architecture"], cfg.eval_protocol) == ("paper", "paper")  # what Table 2 measured
        variants[name] = (cfg.model["use_film"], cfg.model["use_structural_pathway"], cfg.epochs)
    assert variants == {"baseline": (False, False, 10), "film": (True, False, 10), "structural": (False, True, 10),
                        "full": (True, True, 10)}


def test_torchrun_two_processes_on_the_cpu(clip_tower, tree, tmp_path):
    """DistributedDataParallel over gloo: each process trains on its half of every batch and evaluates its share of
    the frames; rank 0 writes one set of files with the metrics of all frames."""
    import subprocess
    import sys
    from pathlib import Path

    config = _config(tmp_path, clip_tower, "release", aux_weights=[0.1, 0.05, 0.0], ema_decay=0.9)
    out = tmp_path / "ddp"
    script = Path(train_kitti.__file__)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(script), *_args(tree, config, out, "--epochs", "1")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "on cpu x2" in result.stdout and result.stdout.count("wrote ") == 1
    record = _validations(out)[-1]
    assert record["n_images"] == 3  # 2 + 1 frames, merged across the processes
    assert [s["step"] for s in _steps(out)] == [1, 2]  # 4 lines, global batch 2 = 1 per process: 2 steps
    state = read_checkpoint(out / "last.pt")["training_state"]
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    load_checkpoint(out / "last.pt")


TINY_SETS = ["--set", f"model.hidden_size={TINY_HIDDEN}", "--set", f"model.decoder_channels={list(TINY_CHANNELS)}",
             "--set", "model.film_hidden_size=16", "--set", "crop=[48, 96]", "--set", "workers=0"]


def test_ablate_trains_the_four_variants_and_prints_table_2(clip_tower, tree, tmp_path, capsys):
    import ablate

    out = tmp_path / "ablation"
    args = ["--out", str(out), "--backbone", str(clip_tower), "--data-path", str(tree.raw), "--gt-path",
            str(tree.gt), "--filenames", str(tree.train_list), "--filenames-eval", str(tree.test_list),
            "--batch-size", "2", "--device", "cpu", "--max-steps", "1", *TINY_SETS]
    assert ablate.main(args) == 0
    printed = capsys.readouterr().out
    paper, standard = (out / "table2.txt").read_text().strip().split("\n\n")
    paper, standard = paper.splitlines(), standard.splitlines()
    assert paper[0].startswith("Table 2, paper protocol") and standard[0].startswith("Table 2, standard protocol")
    for rows in (paper, standard):
        assert [row.split()[0] for row in rows[2:]] == ["baseline", "film", "structural", "full"]
    assert "0.1038" in paper[-1] and "0.1038" not in standard[-1] and "Table 2" in printed
    saved = json.loads((out / "table2.json").read_text())
    assert saved["full"]["paper"]["abs_rel"] != saved["full"]["standard"]["abs_rel"]
    for name, film, structural in (("baseline", False, False), ("film", True, False),
                                   ("structural", False, True), ("full", True, True)):
        config = load_checkpoint(out / name / "best.pt").config
        assert (config.use_film, config.use_structural_pathway) == (film, structural)
    # Finished variants are not trained again.
    assert ablate.main(args) == 0
    assert "training into" not in capsys.readouterr().out


def test_visualize_writes_a_grid(clip_tower, tree, tmp_path):
    import cv2
    import visualize

    out = tmp_path / "run"
    assert train_kitti.main(_args(tree, _config(tmp_path, clip_tower), out, "--max-steps", "1")) == 0
    png = tmp_path / "fig.png"
    assert visualize.main(["--checkpoint", str(out / "last.pt"), "--data-path", str(tree.raw), "--gt-path",
                           str(tree.gt), "--filenames", str(tree.test_list), "--frames", "0", "2", "--device", "cpu",
                           "--out", str(png)]) == 0
    grid = cv2.imread(str(png))
    assert grid.shape == (2 * 352, 3 * 704, 3)
    assert visualize.main(["--checkpoint", str(out / "last.pt"), "--data-path", str(tree.raw), "--gt-path",
                           str(tree.gt), "--filenames", str(tree.test_list), "--frames", "9", "--out",
                           str(png)]) == 2


def test_resume_warns_about_changed_settings(clip_tower, tree, tmp_path, capsys):
    config = _config(tmp_path, clip_tower)
    out = tmp_path / "run"
    assert train_kitti.main(_args(tree, config, out, "--epochs", "2", "--max-steps", "1")) == 0
    capsys.readouterr()
    assert train_kitti.main(_args(tree, config, out, "--epochs", "2", "--set", "lr=0.001", "--resume",
                                  str(out / "last.pt"))) == 0
    assert "warning: resuming with settings that differ from the run's: lr: 0.0001 -> 0.001" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no training state"):
        from space_clip_ros import save_checkpoint
        save_checkpoint(load_checkpoint(out / "last.pt"), tmp_path / "plain.pt")
        train_kitti.main(_args(tree, config, tmp_path / "r2", "--resume", str(tmp_path / "plain.pt")))


def test_release_recipe_validates_on_the_release_path_with_flip_tta(clip_tower, tree, tmp_path):
    """kitti_release.yaml's evaluation: 352x704 maps, Eigen crop, flip TTA at the end; eval_kitti.py agrees."""
    data = yaml.safe_load(_config(tmp_path, clip_tower, "release").read_text())
    data["base"] = str(cfgmod.CONFIGS / "kitti_release.yaml")
    config = tmp_path / "release_tiny.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    assert train_kitti.main(_args(tree, config, out, "--max-steps", "1")) == 0
    validations, finals = _validations(out), _summaries(out)
    assert set(finals) == {"spaceclip", "standard", "paper"}
    record = finals["spaceclip"]
    assert record["primary"] and record["flip_tta"] and record["n_images"] == 3 and record["weights"] == "best.pt"
    # Selection never uses the final TTA: best.pt was chosen on the validations' numbers, which are without it.
    assert not any(v["flip_tta"] for v in validations)
    assert read_checkpoint(out / "best.pt")["provenance"]["abs_rel"] == min(v["abs_rel"] for v in validations)
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert (resolved["eval_protocol"], resolved["ema_decay"], resolved["model"]["use_aux_heads"]) == (
        "spaceclip", 0.996, True)
    result = tmp_path / "eval.json"
    chosen = "best.pt"
    args = ["--data-path", str(tree.raw), "--gt-path", str(tree.gt), "--filenames", str(tree.test_list), "--device",
            "cpu", "--workers", "0", "--protocol", "spaceclip", "--flip-tta", "--out", str(result)]
    assert eval_kitti(["--checkpoint", str(out / chosen), *args]) == 0
    assert json.loads(result.read_text())["abs_rel"] == pytest.approx(record["abs_rel"], rel=1e-5)


def _frames_by_hand(model, tree):
    """(pixel values, ground truth at 352x704) of each test frame as the authors prepare them, written out with PIL:
    image bicubic to 352x704 then to the tower's 64x64, ground truth NEAREST to 352x704."""
    from PIL import Image
    from space_clip_train.data import read_list
    from space_clip_train.kitti import read_depth_png, resolve_depth_path

    mean, std = np.array(model.preprocessing.mean), np.array(model.preprocessing.std)
    for sample in read_list(tree.test_list):
        image = Image.open(tree.raw / sample.image).convert("RGB").resize((704, 352), Image.BICUBIC)
        small = np.asarray(image.resize((64, 64), Image.BICUBIC), np.float32) / 255.0
        x = torch.from_numpy(((small - mean) / std).transpose(2, 0, 1)[None].astype(np.float32))
        gt = np.asarray(Image.fromarray(read_depth_png(resolve_depth_path(tree.gt, sample.depth))).resize(
            (704, 352), Image.NEAREST))
        yield x, gt


def test_spaceclip_protocol_with_flip_tta_by_hand(clip_tower, tree, tmp_path):
    """eval_kitti.py --protocol spaceclip --flip-tta against the release's recipe written out step by step."""

    from helpers import tiny_model
    from space_clip_train.kitti import crop_mask
    from space_clip_train.metrics import compute_errors

    from space_clip_ros import save_checkpoint

    model = tiny_model(clip_tower)  # heads biased positive: depth well above the 1e-3 clamp
    save_checkpoint(model, tmp_path / "tiny.pt", provenance={"trained": True})
    result = tmp_path / "eval.json"
    args = ["--checkpoint", str(tmp_path / "tiny.pt"), "--data-path", str(tree.raw), "--gt-path", str(tree.gt),
            "--filenames", str(tree.test_list), "--device", "cpu", "--workers", "0", "--protocol", "spaceclip"]
    assert eval_kitti([*args, "--flip-tta", "--out", str(result)]) == 0
    got = json.loads(result.read_text())
    sums = {}
    for x, gt in _frames_by_hand(model, tree):
        with torch.no_grad():
            pred = 0.5 * (model(x, output_size=(352, 704)) + model(x.flip(3), output_size=(352, 704)).flip(3))
        valid = (gt > 1e-3) & (gt < 80) & crop_mask((352, 704), "eigen")
        errors = compute_errors(gt[valid], np.clip(pred[0, 0].numpy()[valid], 1e-3, 80))
        for key, value in errors.items():
            sums[key] = sums.get(key, 0.0) + value / 3
    for key in sums:
        assert got[key] == pytest.approx(sums[key], rel=1e-4), key
    assert eval_kitti([*args, "--out", str(result)]) == 0  # without TTA: other numbers
    assert json.loads(result.read_text())["abs_rel"] != pytest.approx(got["abs_rel"], rel=1e-6)


def test_paper_protocol_by_hand(clip_tower, tree, tmp_path):
    """eval_kitti.py --protocol paper against the first code version's evaluation written out step by step: gt
    resized NEAREST to 352x704, no crop, 1e-3 < gt < 80, per-image median scaling, no clamp."""

    from helpers import tiny_model
    from space_clip_train.metrics import compute_errors

    from space_clip_ros import save_checkpoint

    model = tiny_model(clip_tower, architecture="paper")
    save_checkpoint(model, tmp_path / "tiny.pt", provenance={"trained": True})
    result = tmp_path / "eval.json"
    assert eval_kitti(["--checkpoint", str(tmp_path / "tiny.pt"), "--data-path", str(tree.raw), "--gt-path",
                            str(tree.gt), "--filenames", str(tree.test_list), "--device", "cpu", "--workers", "0",
                            "--protocol", "paper", "--out", str(result)]) == 0
    got = json.loads(result.read_text())
    sums = {}
    for x, gt in _frames_by_hand(model, tree):
        with torch.no_grad():
            pred = model(x, output_size=(352, 704))[0, 0].numpy()
        valid = (gt > 1e-3) & (gt < 80)  # no crop
        g, p = gt[valid], pred[valid]
        errors = compute_errors(g, p * (np.median(g) / np.median(p)))
        for key, value in errors.items():
            sums[key] = sums.get(key, 0.0) + value / 3
    for key in sums:
        assert got[key] == pytest.approx(sums[key], rel=1e-4), key


def test_train_is_a_package_and_its_scripts_run_from_any_folder(tmp_path):
    """The scripts import the library (train/space_clip_train) with no sys.path edits, from any working folder."""
    import subprocess
    import sys
    from pathlib import Path

    train_dir = Path(train_kitti.__file__).parent
    for path in sorted(train_dir.rglob("*.py")):
        assert "sys.path" not in path.read_text(), f"{path} edits sys.path"
    for script in ("train_kitti.py", "train_nyu.py", "ablate.py", "visualize.py",
                   "export_gt_depth.py", "finetune.py", "evaluate.py"):
        result = subprocess.run([sys.executable, str(train_dir / script), "--help"], cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "usage:" in result.stdout, (script, result.stderr[-2000:])


def test_compile_decoder_keeps_checkpoints_loadable(clip_tower, tree, tmp_path):
    """compile_decoder: torch.compile in place; the checkpoint's keys and the node's loading are unchanged."""
    out = tmp_path / "compiled"
    config = _config(tmp_path, clip_tower, "release", summary_protocols=["paper"])
    assert train_kitti.main(_args(tree, config, out, "--max-steps", "1", "--set", "compile_decoder=true")) == 0
    saved = read_checkpoint(out / "best.pt")["decoder"]
    assert not any("_orig_mod" in key for key in saved)
    assert sorted(load_checkpoint(out / "best.pt").decoder.state_dict()) == sorted(saved)


def test_ablation_configs_and_ablate_py_are_the_models_variants():
    """The four Table 2 variants are defined once (ABLATION_VARIANTS of the model's config): each
    ablation_<name>.yaml sets exactly those flags, and ablate.py runs exactly those variants."""
    import ablate

    from space_clip_ros.model.config import ABLATION_VARIANTS

    for name, flags in ABLATION_VARIANTS.items():
        model = cfgmod.load_yaml(cfgmod.CONFIGS / f"ablation_{name}.yaml")["model"]
        assert {key: model[key] for key in flags} == flags, name
        assert ablate.VARIANTS[name][:2] == (flags["use_film"], flags["use_structural_pathway"])
    assert set(ablate.VARIANTS) == set(ABLATION_VARIANTS)
    assert sorted(p.stem for p in cfgmod.CONFIGS.glob("ablation_*.yaml")) == sorted(
        f"ablation_{name}" for name in ABLATION_VARIANTS)


def _as_written_before_heads_froze(path, decoder_keys):
    """last.pt as a run from before unweighted aux heads were frozen wrote it: the optimizer listed every decoder
    parameter (the unweighted head's never got a gradient, so no state)."""
    from space_clip_ros.checkpoint import atomic_save

    ckpt = read_checkpoint(path)
    names = list(decoder_keys)
    frozen = [i for i, k in enumerate(names) if k.startswith("aux_depth_heads.2.")]
    kept = [i for i in range(len(names)) if i not in frozen]
    optimizer = ckpt["training_state"]["optimizer"]
    optimizer["state"] = {kept[int(i)]: v for i, v in optimizer["state"].items()}
    optimizer["param_groups"][0]["params"] = list(range(len(names)))
    atomic_save(ckpt, path)


def test_a_run_from_before_the_heads_froze_resumes_and_continues_identically(clip_tower, tree, tmp_path, capsys):
    config = _config(tmp_path, clip_tower, "release", aux_weights=[0.1, 0.05, 0.0])
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train_kitti.main(_args(tree, config, straight, "--epochs", "1")) == 0
    assert "auxiliary head(s) [2] have no weight in the loss" in capsys.readouterr().out
    assert train_kitti.main(_args(tree, config, split, "--epochs", "1", "--max-steps", "1")) == 0
    after_one = read_checkpoint(split / "last.pt")["decoder"]
    head = [k for k in after_one if k.startswith("aux_depth_heads.2.")]
    final = read_checkpoint(straight / "last.pt")["decoder"]  # a step later: the frozen head, statistics too, as was
    assert any("running_mean" in k for k in head) and all(torch.equal(after_one[k], final[k]) for k in head)
    model = load_checkpoint(split / "last.pt")
    _as_written_before_heads_froze(split / "last.pt", [n for n, _ in model.decoder.named_parameters()])
    assert train_kitti.main(_args(tree, config, split, "--epochs", "1", "--resume", str(split / "last.pt"))) == 0
    assert [s["loss"] for s in _steps(straight)] == [s["loss"] for s in _steps(split)]
