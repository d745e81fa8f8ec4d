"""The GPU check's plumbing, on the CPU: every step of benchmarks/device_check.py runs as far as it goes without
CUDA (arguments, data set-up, the wheel install that makes start-up hooks run, the CUDA tests' collection), so a
wrong argument fails here and not in a short GPU slot; steps past their cap or the deadline are stopped or skipped
with a line saying so."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import device_check  # noqa: E402

STEPS = ["machine", "cuda tests", "frame path", "alignment", "ros wheels", "node", "start-up", "training",
         "compiled tests"]


def test_the_whole_check_runs_dry_on_the_cpu(tmp_path):
    pytest.importorskip("rclpy", reason="the node step's dry run imports rclpy: pip install -e '.[ros]'")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "benchmarks/device_check.py", "--dry-run", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert list(results) == STEPS
    assert all(r["status"] == "ok" for r in results.values()), {k: r["status"] for k, r in results.items()}
    assert "a wheel start-up hook ran" in done.stdout  # the .pth of a wheel installed as the ROS ones are
    assert results["ros wheels"]["headline"].endswith("rclpy usable")
    assert "tests collected" in results["cuda tests"]["headline"]
    assert "tests collected" in results["compiled tests"]["headline"]
    assert "train_kitti.py as typed" in results["training"]["headline"]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["check.log", "compiled_tests.xml", "cuda_tests.xml", "machine.txt", "results.json", "summary.md",
                     "tables.md"]
    summary = (out / "summary.md").read_text()
    assert all(f"| {name} | ok |" in summary for name in STEPS)
    assert summary.count("not seen (dry run)") == len(device_check.DEFECTS)


def test_the_verdict_comes_first_and_the_caps_fit_the_deadline():
    """The path's CUDA tests and the frame path before anything that compiles or trains, the frame path within the
    first 4 minutes even when every step before it runs to its cap, and every step's cap inside the deadline."""
    steps = [s for s in device_check.python_steps() if s.default]
    names = [s.name for s in steps]
    assert names[:2] == ["cuda tests", "frame path"] and names[-1] == "compiled tests"
    assert device_check.FIXED_S + sum(s.cap_s for s in steps) <= 460
    assert device_check.FIXED_S + steps[0].cap_s <= 240


def test_each_defect_is_judged_by_what_the_gpu_ran(tmp_path):
    args = device_check.argparse.Namespace(dry_run=False, out=str(tmp_path), deadline=460.0, only=None)
    check = device_check.Check(args)
    passed, failed = "<testcase classname='c' name='{}'/>", "<testcase classname='c' name='{}'><failure/></testcase>"
    names = [n for _, _, tests in device_check.DEFECTS for n in tests]
    cases = [passed.format(n) for n in names if "stream" not in n] + [failed.format(names[-1] + "[x]")]
    (tmp_path / "cuda_tests.xml").write_text(f"<testsuites><testsuite>{''.join(cases)}</testsuite></testsuites>")
    for name in ("cuda tests", "frame path", "node"):
        check.outcomes.append(device_check.Outcome(name, "ok", 1.0))
    check.begun["frame path"] = 130.0
    verdicts = {title[0]: verdict for title, verdict, _ in check.verdicts()}
    assert verdicts["1"] == verdicts["2"] == verdicts["3"] == verdicts["4"] == verdicts["7"] == "fixed"
    assert verdicts["5"].startswith("NOT fixed") and "failed" in verdicts["5"]
    assert verdicts["6"].startswith("not seen") and "compiled tests: not run" in verdicts["6"]


def test_a_wrong_argument_fails_the_dry_run():
    done = subprocess.run([sys.executable, "benchmarks/bench_train.py", "--batch", "64", "--train-frames", "32",
                           "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "fewer than one batch of 64" in done.stderr
    done = subprocess.run([sys.executable, "benchmarks/bench_inference.py", "--device", "cuda", "--backends",
                           "cudagraf:fp16", "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "bad row 'cudagraf:fp16'" in done.stderr
    with pytest.raises(SystemExit):
        device_check.main(["--only", "nonsense"])


def test_a_step_past_its_cap_is_stopped_and_one_past_the_deadline_skipped(tmp_path):
    args = device_check.argparse.Namespace(dry_run=False, out=str(tmp_path), deadline=30.0, only=None)
    check = device_check.Check(args)
    outcome = check.run("sleeper", [sys.executable, "-c", "import time; print('| a | table |', flush=True); "
                                                          "time.sleep(60)"], cap=2.0)
    assert outcome.status == "stopped at its 2 s cap" and outcome.seconds < 20
    check.step(device_check.Step("too long", cap_s=100, min_s=60, argv=lambda c: ["true"]))
    assert check.outcomes[-1].status.startswith("skipped: ") and "it needs 60 s" in check.outcomes[-1].status
    assert check.summary(0.0) == 0  # stopped and skipped steps were said; nothing failed
    assert "| a | table |" in (tmp_path / "tables.md").read_text()
    assert "| too long | skipped:" in (tmp_path / "summary.md").read_text()


def test_wheels_install_so_that_their_start_up_hooks_run(tmp_path):
    wheel = device_check.probe_wheel(tmp_path)
    assert "space_clip_probe.pth" in zipfile.ZipFile(wheel).namelist()
    boot = device_check.install_wheels([wheel], tmp_path / "site")
    env = {"PYTHONPATH": str(boot), "PATH": "/usr/bin:/bin"}
    code = "import os; print(os.environ.get('SPACE_CLIP_PROBE'))"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip() \
        == "hooked"
    # The folder alone on PYTHONPATH (pip --target as before) imports the module but never runs the hook.
    env["PYTHONPATH"] = str(tmp_path / "site")
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip() \
        == "None"
