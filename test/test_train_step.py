"""The training step never waits for the device: nothing is read on the host between log intervals (checked on the
CPU by SyncGuard, which fails on any host read or data-dependent shape, as for the node's frame path), and a step
that must not count (non-finite loss or gradient, an fp16 overflow) is undone on the device."""

import json

import pytest
import torch
from space_clip_train.config import resolve_config
from space_clip_train.trainer import Trainer
from test_train_run import _config

from space_clip_ros.sync_guard import SyncGuard


def _trainer(clip_tower, tree, tmp_path, **extra) -> Trainer:
    path = _config(tmp_path, clip_tower, "release", aux_weights=[0.1, 0.05, 0.0], ema_decay=0.9,
                   scheduler="cosine_warmup", **extra)
    config = resolve_config(path, data_path=str(tree.raw), gt_path=str(tree.gt), filenames=str(tree.train_list),
                            filenames_eval=str(tree.test_list), batch_size=2, device="cpu",
                            out=str(tmp_path / "run"))
    return Trainer(config)


def _batches(trainer, count):
    batches = []
    while len(batches) < count:
        trainer.order.set_epoch(len(batches))
        batches.extend(trainer.loader)
    return batches[:count]


def _decoder_state(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.decoder.state_dict().items()}


def test_steps_read_nothing_on_the_host_until_the_log_interval(clip_tower, tree, tmp_path, monkeypatch):
    trainer = _trainer(clip_tower, tree, tmp_path, log_every=3)
    batches = _batches(trainer, 7)
    reads = []
    tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: reads.append(trainer.step) or tolist(t))
    with SyncGuard() as guard:  # strict: .item(), float(t), bool(t), boolean masks, nonzero... raise
        for batch in batches:
            trainer._train_step(batch)
    assert not guard.violations
    assert reads == [3, 6]  # one read of the interval's losses and flags, at steps 3 and 6
    trainer._flush()
    assert reads == [3, 6, 7]
    rows = [json.loads(line) for line in (trainer.out / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 8))
    assert all(set(r) >= {"loss", "silog", "ssim", "aux", "lr"} and r["loss"] > 0 and "skipped" not in r for r in rows)


@pytest.mark.parametrize("fault", ["loss", "fp16 overflow"])
def test_a_skipped_step_is_undone_on_the_device(clip_tower, tree, tmp_path, monkeypatch, fault):
    """A NaN loss, or an fp16 gradient overflow (a CPU GradScaler standing in for CUDA's; the overflow injected into
    one gradient): weights, AdamW's moments and step count, BatchNorm statistics and the EMA stay as they were, the
    schedule moves on, and the flush reports the step as skipped (the scaler's scale lowered for the overflow)."""
    trainer = _trainer(clip_tower, tree, tmp_path, log_every=100)
    if fault == "fp16 overflow":
        trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    batches = _batches(trainer, 2)
    trainer._train_step(batches[0])
    weights = _decoder_state(trainer)
    moments = {id(p): {k: v.clone() for k, v in trainer.optimizer.state[p].items()} for p in trainer.trainable}
    ema = {k: v.clone() for k, v in trainer.ema.shadow.items()}
    lr = trainer.optimizer.param_groups[0]["lr"]
    if fault == "loss":
        forward = trainer.criterion.forward

        def nan_loss(*args, **kwargs):
            out = forward(*args, **kwargs)
            return {**out, "loss": out["loss"] * float("nan")}
        monkeypatch.setattr(trainer.criterion, "forward", nan_loss)
    else:
        trainer.trainable[0].register_hook(lambda grad: grad * float("inf"))
    with SyncGuard():
        trainer._train_step(batches[1])
    after = _decoder_state(trainer)
    assert all(torch.equal(weights[k], after[k]) for k in weights)  # parameters and BatchNorm statistics
    for p in trainer.trainable:
        assert all(torch.equal(moments[id(p)][k], v) for k, v in trainer.optimizer.state[p].items())
    assert all(torch.equal(ema[k], v) for k, v in trainer.ema.shadow.items())
    assert trainer.step == 2 and trainer.optimizer.param_groups[0]["lr"] != lr  # the schedule moved on
    trainer._flush()
    rows = [json.loads(line) for line in (trainer.out / "steps.jsonl").read_text().splitlines()]
    assert "skipped" not in rows[0]
    if fault == "loss":
        assert rows[1]["skipped"] == "non-finite loss" and trainer.nonfinite_steps == 1
    else:
        assert rows[1]["skipped"] == "fp16 gradient overflow" and trainer.scaler_skipped == 1
        assert trainer.scaler.get_scale() == 512.0
    assert trainer.consecutive_nonfinite == 1


def test_the_ema_skips_on_a_device_flag():
    from space_clip_train.optim import EMA

    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = EMA(module, 0.9)
    start = {k: v.clone() for k, v in ema.shadow.items()}
    with torch.no_grad():
        module[0].weight.add_(1.0)
    module.train()(torch.rand(4, 3))  # BatchNorm statistics and its batch count move
    ema.update(module, torch.tensor(True))
    assert all(torch.equal(start[k], v) for k, v in ema.shadow.items() if v.is_floating_point())
    ema.update(module, torch.tensor(False))
    expected = start["0.weight"] + 0.1 * (module[0].weight - start["0.weight"])
    torch.testing.assert_close(ema.shadow["0.weight"], expected, rtol=0, atol=1e-7)
    assert int(ema.shadow["1.num_batches_tracked"]) == 1
