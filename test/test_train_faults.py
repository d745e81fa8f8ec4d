"""train_kitti.py under faults: killed mid-epoch or while writing a checkpoint, it resumes from the last complete
checkpoint; a NaN/Inf loss skips its step with a report, and too many in a row stop the run."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
import train_kitti
from test_train_run import _args, _config, _steps

from space_clip_ros.checkpoint import read_checkpoint


def _wait(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_mid_epoch_then_resume(clip_tower, tree, tmp_path):
    out = tmp_path / "run"
    config = _config(tmp_path, clip_tower, eval_every=100)
    args = _args(tree, config, out, "--epochs", "25", "--seed", "3")
    proc = subprocess.Popen([sys.executable, train_kitti.__file__, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: (out / "last.pt").is_file() and (out / "steps.jsonl").is_file()
              and len(_steps(out)) >= 5, 240, "training to pass two epochs")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = read_checkpoint(out / "last.pt")["training_state"]["step"]
    assert 0 < killed_at < 50
    assert train_kitti.main(args + ["--resume", str(out / "last.pt")]) == 0
    state = read_checkpoint(out / "last.pt")["training_state"]
    assert (state["epoch"], state["step"]) == (25, 50)
    steps = [s["step"] for s in _steps(out)]
    assert steps[-1] == 50 and set(range(1, 51)) <= set(steps)  # no step lost (some done twice before the kill)


def test_sigkill_while_writing_a_checkpoint_leaves_the_last_good_one(clip_tower, tree, tmp_path, capsys):
    out = tmp_path / "run"
    config = _config(tmp_path, clip_tower)
    args = _args(tree, config, out, "--epochs", "1", "--seed", "3")
    assert train_kitti.main(args) == 0
    good = (out / "last.pt").read_bytes()
    # A process writing a (large) checkpoint through the same atomic writer is killed half-way through.
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, torch; from space_clip_ros.checkpoint import atomic_save; "
        "atomic_save({'x': torch.rand(120_000_000)}, sys.argv[1])"), str(out / "last.pt")])
    try:
        _wait(lambda: any(p.stat().st_size > 10_000_000 for p in out.glob(".last.pt.*.tmp")), 120,
              "the checkpoint write to be under way")
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(30)
    assert list(out.glob(".last.pt.*.tmp")), "the kill should have left the partial temporary file"
    assert (out / "last.pt").read_bytes() == good  # untouched
    assert read_checkpoint(out / "last.pt")["training_state"]["epoch"] == 1
    capsys.readouterr()
    assert train_kitti.main(args[:-4] + ["--epochs", "2", "--seed", "3", "--resume", str(out / "last.pt")]) == 0
    assert "a checkpoint write that did not finish" in capsys.readouterr().out
    assert not list(out.glob(".*.tmp"))
    assert read_checkpoint(out / "last.pt")["training_state"]["epoch"] == 2


def _nan_at(forward, bad):
    """SpaceClipLoss.forward, with a NaN loss at the given calls (1-based; "all": every call)."""
    calls = []

    def patched(criterion, *args, **kwargs):
        calls.append(1)
        out = forward(criterion, *args, **kwargs)
        if len(calls) in bad or "all" in bad:
            out["loss"] = out["loss"] * float("nan")
        return out

    return patched


def test_a_nan_loss_skips_its_step_and_is_reported(clip_tower, tree, tmp_path, monkeypatch, capsys):
    from space_clip_train.losses import SpaceClipLoss

    config = _config(tmp_path, clip_tower)
    clean = tmp_path / "clean"
    assert train_kitti.main(_args(tree, config, clean, "--max-steps", "1", "--seed", "5")) == 0
    monkeypatch.setattr(SpaceClipLoss, "forward", _nan_at(SpaceClipLoss.forward, {2}))
    out = tmp_path / "nan"
    assert train_kitti.main(_args(tree, config, out, "--max-steps", "2", "--seed", "5")) == 0
    printed = capsys.readouterr()
    assert "non-finite loss at step 2 (epoch 1): step skipped" in printed.out + printed.err
    steps = _steps(out)
    assert steps[1]["step"] == 2 and steps[1]["skipped"] == "non-finite loss"
    # The skipped step changed no weight: the decoder equals the one-step run's.
    skipped = read_checkpoint(out / "last.pt")["decoder"]
    for key, value in read_checkpoint(clean / "last.pt")["decoder"].items():
        assert torch.equal(skipped[key], value), key


@pytest.mark.filterwarnings("error:Detected call of")  # skipped steps move the schedule without torch's warning
def test_nan_losses_in_a_row_stop_the_run(clip_tower, tree, tmp_path, monkeypatch):
    from space_clip_train.losses import SpaceClipLoss

    config = _config(tmp_path, clip_tower, max_nonfinite_steps=3)
    monkeypatch.setattr(SpaceClipLoss, "forward", _nan_at(SpaceClipLoss.forward, {"all"}))
    with pytest.raises(SystemExit, match="3 steps in a row had a non-finite loss .*resume from last.pt"):
        train_kitti.main(_args(tree, config, tmp_path / "run", "--epochs", "5"))
    lines = (tmp_path / "run" / "steps.jsonl").read_text().splitlines()
    assert [json.loads(line)["skipped"] for line in lines] == ["non-finite loss"] * 3
