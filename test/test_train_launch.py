"""Training started as users start it: ``python train/train_kitti.py`` with its default device, and ``torchrun
--nproc_per_node 2`` (gloo on the CPU) for every shipped config and for fine-tuning a release-trained checkpoint
(auxiliary heads built, no weight for them); the device a GPU run gets, with CUDA mocked."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import TINY_CHANNELS, TINY_HIDDEN, tiny_model
from nyu_tree import write_nyu_tree
from space_clip_train import config as cfgmod

from space_clip_ros.checkpoint import read_checkpoint, save_checkpoint
from space_clip_ros.device import resolve_device

TRAIN = Path(__file__).resolve().parents[1] / "train"
KITTI_CONFIGS = ["kitti_paper", "kitti_release", "ablation_baseline", "ablation_film", "ablation_structural",
                 "ablation_full"]
NYU_CONFIGS = ["nyu_paper", "nyu_release"]


@pytest.fixture
def fake_cuda(monkeypatch):
    """Two CUDA devices as torch would report them, ``torch.cuda.set_device`` checking its argument as the real one
    does (an index is required) and recording it; NCCL's process group (and the gloo group beside it) recorded
    instead of started."""
    calls = {"set_device": [], "backend": [], "group": []}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device",
                        lambda device: calls["set_device"].append(torch.cuda._get_device_index(device)))
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend: calls["backend"].append(backend))
    monkeypatch.setattr(torch.distributed, "new_group", lambda backend: calls["group"].append(backend) or backend)
    return calls


def test_the_default_device_on_a_gpu_machine_comes_with_its_index(fake_cuda, monkeypatch):
    from space_clip_train.distributed import Process

    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="Expected a torch.device with a specified index"):
        torch.cuda.set_device(torch.device("cuda"))  # what train_kitti.py's default stopped on
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert Process("auto").device == torch.device("cuda", 0) and fake_cuda["set_device"] == [0]
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)  # "cuda" is the current device, not the first
    assert resolve_device("cuda") == resolve_device("auto") == torch.device("cuda", 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun's second process: the second GPU, NCCL
    assert Process("auto").device == torch.device("cuda", 1)
    assert fake_cuda["set_device"][-1] == 1 and fake_cuda["backend"] == ["nccl"]
    assert fake_cuda["group"] == ["gloo"]  # host counts are summed on the host, not through the GPU


def _tiny(tmp_path, tower, base, name="tiny.yaml", **extra):
    data = {"base": str(cfgmod.CONFIGS / f"{base}.yaml"),
            "model": {"backbone": str(tower), "hidden_size": TINY_HIDDEN, "decoder_channels": list(TINY_CHANNELS),
                      "film_hidden_size": 16},
            "workers": 0, "log_images": 0, "epochs": 1, **extra}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _run(argv, timeout=300):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _torchrun(script, *args):
    return _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                 str(TRAIN / script), *map(str, args)])


def test_train_kitti_as_typed_trains_on_its_default_device(clip_tower, tree, tmp_path):
    """No --device: ``auto`` (a GPU where there is one, else the CPU), as the mission's command is printed."""
    out = tmp_path / "run"
    printed = _run([sys.executable, str(TRAIN / "train_kitti.py"), "--config",
                    _tiny(tmp_path, clip_tower, "kitti_paper", crop=[48, 96]), "--data-path", tree.raw,
                    "--gt-path", tree.gt, "--filenames", tree.train_list, "--filenames-eval", tree.test_list,
                    "--batch-size", "2", "--max-steps", "1", "--out", out])
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert f"on {expected} x1" in printed and (out / "best.pt").is_file()


@pytest.mark.parametrize("name", KITTI_CONFIGS + NYU_CONFIGS)
def test_torchrun_two_processes_train_every_shipped_config(clip_tower, tree, tmp_path_factory, tmp_path, name):
    if name in NYU_CONFIGS:
        nyu = write_nyu_tree(tmp_path_factory.mktemp("nyu"))
        script, data = "train_nyu.py", ["--data-path", nyu.root, "--filenames", nyu.train_list, "--filenames-eval",
                                        nyu.test_list]
        extra = {"crop": [96, 128]}
    else:
        script, data = "train_kitti.py", ["--data-path", tree.raw, "--gt-path", tree.gt, "--filenames",
                                          tree.train_list, "--filenames-eval", tree.test_list]
        extra = {"crop": [48, 96]}
    out = tmp_path / "run"
    printed = _torchrun(script, "--config", _tiny(tmp_path, clip_tower, name, **extra), *data, "--batch-size", "2",
                        "--max-steps", "2", "--device", "cpu", "--out", out)
    assert "on cpu x2" in printed and (out / "best.pt").is_file()
    assert read_checkpoint(out / "last.pt")["training_state"]["step"] == 2


def test_torchrun_finetunes_a_release_trained_checkpoint_without_its_aux_heads(clip_tower, tree, tmp_path):
    """finetune.yaml gives the auxiliary heads no weight: they are frozen, so DistributedDataParallel never waits
    for their gradients, and they come out of the run as they went in."""
    init = save_checkpoint(tiny_model(clip_tower, architecture="release", use_aux_heads=True), tmp_path / "rel.pt",
                           provenance={"trained": True, "source": "test"})
    out = tmp_path / "run"
    printed = _torchrun("finetune.py", "--dataset", "kitti", "--data-path", tree.raw, "--gt-path", tree.gt,
                        "--filenames", tree.train_list, "--filenames-eval", tree.test_list, "--init", init, "--out",
                        out, "--max-steps", "2", "--device", "cpu", "--workers", "0", "--batch-size", "2", "--set",
                        "crop=[48, 96]")
    assert "on cpu x2" in printed and "frozen" in printed
    before, after = read_checkpoint(init)["decoder"], read_checkpoint(out / "last.pt")["decoder"]
    heads = [k for k in before if k.startswith("aux_depth_heads.")]
    assert heads and all(torch.equal(before[k], after[k]) for k in heads)
    assert any(not torch.equal(before[k], after[k]) for k in before if k not in heads)  # the rest trained
