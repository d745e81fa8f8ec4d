"""Under torchrun, N processes optimise the single-process objective: the losses are those of the global batch, so
two gloo processes with half the batch each get the gradients one process gets on the whole batch."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import tiny_model
from space_clip_train.losses import GlobalBatch, SpaceClipLoss

BATCH = 4


def _data(seed=0):
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randn(BATCH, 3, 64, 64, generator=gen)
    gt = torch.rand(BATCH, 1, 40, 80, generator=gen) * 90 + 0.5
    # Very different numbers of valid pixels per sample: a mean of per-process means would differ from the global one.
    valid = torch.rand(BATCH, 1, 40, 80, generator=gen) < torch.tensor([0.9, 0.05, 0.6, 0.2]).view(-1, 1, 1, 1)
    return pixels, torch.where(valid, gt, torch.zeros_like(gt))


def _gradients(tower, architecture, version, aux, rank, world):
    """Decoder gradients of one step, for this process's share of the batch (BatchNorm frozen: SyncBatchNorm, which
    makes its statistics global, needs GPUs)."""
    model = tiny_model(tower, architecture=architecture, use_aux_heads=bool(aux), dropout=0.0).eval()
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    pixels, gt = _data()
    share = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    loss_fn = SpaceClipLoss(0.5, aux, version=version, group=GlobalBatch() if world > 1 else None)
    out = net(pixels[share], output_size=(40, 80), return_aux=bool(aux))
    depth, aux_out = out if isinstance(out, tuple) else (out, None)
    losses = loss_fn(depth, gt[share], aux_out)
    losses["loss"].backward()
    return {name: p.grad.clone() for name, p in model.decoder.named_parameters()}, float(losses["loss"].detach())


def _worker(rank, world, init_file, tower, architecture, version, aux, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        grads, loss = _gradients(tower, architecture, version, aux, rank, world)
        if rank == 0:
            torch.save({"grads": grads, "loss": loss}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("architecture, version, aux", [
    ("paper", "paper", []),
    ("release", "release", [0.1, 0.05, 0.02]),
])
def test_two_processes_get_the_single_process_gradients(clip_tower, tmp_path, architecture, version, aux):
    single, loss = _gradients(clip_tower, architecture, version, aux, rank=0, world=1)
    out = tmp_path / "ddp.pt"
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), clip_tower, architecture, version, aux, str(out)), nprocs=2,
             join=True)
    ddp = torch.load(out)
    assert ddp["loss"] == pytest.approx(loss, rel=1e-5)  # the global loss, on every process
    assert set(ddp["grads"]) == set(single)
    for name, grad in single.items():
        torch.testing.assert_close(ddp["grads"][name], grad, rtol=1e-4, atol=1e-7, msg=name)
    assert sum(float(g.abs().sum()) for g in single.values()) > 0


def test_a_mean_of_per_process_losses_would_differ(clip_tower):
    """The check above can fail: averaging the gradients of two half-batch losses (plain DDP with local losses) is
    not the whole batch's gradient."""
    pixels, gt = _data()

    def grads(parts):
        model = tiny_model(clip_tower, dropout=0.0).eval()
        loss_fn = SpaceClipLoss(0.5)
        for part in parts:
            (loss_fn(model(pixels[part], output_size=(40, 80)), gt[part])["loss"] / len(parts)).backward()
        return torch.cat([p.grad.flatten() for p in model.decoder.parameters()])

    whole, halves = grads([slice(0, 4)]), grads([slice(0, 2), slice(2, 4)])
    with pytest.raises(AssertionError):  # the tolerance of the test above would catch it
        torch.testing.assert_close(halves, whole, rtol=1e-4, atol=1e-7)
