"""The GPU check in one short slot: the verdict on the GPU path first, every step capped, the caps summing within the
deadline, every table printed as it is measured, and a summary that names each known GPU defect as seen fixed or not.

    here:   bash benchmarks/device_wheels.sh          # ROS 2 Jazzy wheels for the GPU machine's Python 3.12 (.whl/)
    there:  run(command="bash benchmarks/device_check.sh", carry=[".whl"], timeout_s=540)
    CI:     python benchmarks/device_check.py --dry-run   (each step as far as it goes without CUDA)

Steps, in order (a step that cannot fit in what is left of the deadline is skipped with a line saying so):
  machine         GPU, driver, torch, CUDA, transformers
  cuda tests      the CUDA tests that compile nothing (pytest -k cuda -m "not compiles"): the path's CUDA graphs
                  against eager, capture failures, streams, CPU against CUDA
  frame path      bench_frame_path.py at 1242x375, every output: the replay timed with CUDA events, kernels per
                  frame counted by the profiler, eager alongside
  alignment       bench_alignment.py: scale alignment and fusion, accuracy and cost
  ros wheels      .whl/ installed into a folder that a generated sitecustomize adds as a site directory, so the
                  wheels' .pth start-up hooks run (a plain --target folder on PYTHONPATH leaves rclpy half set up)
  node            bench_node.py: the node over DDS with 1 and 8 cameras, every output subscribed
  start-up        bench_startup.py: first depth and compiled path, cold cache then cached
  training        train_as_typed.py: `python train/train_kitti.py` with its defaults (device auto, batch 64, bf16)
                  for 4 steps, then bench_train.py at batch 64: the trainer against a plain fp32 loop
  compiled tests  the CUDA tests that compile with inductor (pytest -m compiles)
Opt-in with --only: inference (bench_inference.py, eager against the CUDA-graph backends), outputs (bench_node.py
--outputs-only). All steps share one torch inductor cache, so what one step compiled is a cache hit for the next.

What comes back in $OUT: summary.md (the defects' verdicts and the steps' table), tables.md (every table, as
printed), check.log (everything every step printed), results.json (each step's numbers), cuda_tests.xml and
compiled_tests.xml (JUnit), machine.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
CUDA_TEST_FILES = ["test/test_capture.py", "test/test_frame_graphs.py", "test/test_sync_free_frame_path.py",
                   "test/test_backends.py", "test/test_dense_outputs.py", "test/test_planner_outputs.py",
                   "test/test_alignment.py", "test/test_export.py", "test/test_estimator.py"]


@dataclass
class Step:
    name: str
    cap_s: float  # the most this step may run
    min_s: float  # skipped when less than this is left before the deadline
    argv: Callable[["Check"], List[str]]
    json: bool = True  # the step writes --json
    needs: Optional[Callable[["Check"], Optional[str]]] = None  # a reason to skip, or None
    default: bool = True  # run without --only (False: opt-in)


@dataclass
class Outcome:
    name: str
    status: str
    seconds: float
    headline: str = ""
    data: Dict = field(default_factory=dict)
    output: List[str] = field(default_factory=list)  # what the step printed


def pytest_step(name: str, marker: str, cap: float, minimum: float) -> Step:
    py = [sys.executable]
    xml = name.replace(" ", "_") + ".xml"
    return Step(name, cap, minimum, lambda c: py + [
        "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "-k", "cuda", "-m", marker,
        f"--junitxml={c.out / xml}"] + CUDA_TEST_FILES + (["--collect-only"] if c.dry_run else []), json=False)


#: Seconds the machine and ros wheels steps take at most (not capped: a probe and a pip install).
FIXED_S = 40


def python_steps() -> List[Step]:
    """The steps after the machine, in order; their caps and FIXED_S sum within the default deadline."""
    py = [sys.executable]
    return [
        pytest_step("cuda tests", "not compiles", 85, 50),
        Step("frame path", 40, 20, lambda c: py + ["benchmarks/bench_frame_path.py", "--device", "cuda",
                                                    "--repeats", "30"]),
        Step("alignment", 30, 15, lambda c: py + ["benchmarks/bench_alignment.py", "--device", "cuda",
                                                  "--repeats", "10"]),
        Step("ros wheels", 0, 0, lambda c: [], json=False),  # installed by Check.wheels at this point
        Step("node", 65, 40, lambda c: py + ["benchmarks/bench_node.py", "--device", "cuda", "--cameras", "1,8",
                                             "--frames", "4", "--seconds", "4", "--subscribe", "all",
                                             "--wait-compiled", "0"],
             needs=lambda c: c.ros_problem),
        Step("start-up", 60, 30, lambda c: py + ["benchmarks/bench_startup.py", "--device", "cuda", "--wait", "40"]),
        Step("training", 90, 30, lambda c: py + ["benchmarks/train_as_typed.py", "--steps", "4", "--bench"]),
        pytest_step("compiled tests", "compiles", 50, 20),
        Step("inference", 110, 40, lambda c: py + [
            "benchmarks/bench_inference.py", "--device", "cuda", "--iters", "30",
            "--backends", "eager:fp32,eager:fp16,cudagraph-nocompile:fp32,cudagraph-nocompile:fp16,cudagraph:fp16"],
            default=False),
        Step("outputs", 45, 15, lambda c: py + ["benchmarks/bench_node.py", "--device", "cuda", "--outputs-only",
                                                "--frames", "30"], default=False),
    ]


#: The GPU defects a reading found before the first GPU run of the rebuilt path (issue 31), and which steps and
#: CUDA tests show each one fixed.
DEFECTS = [
    ("1 the one download at KITTI size", ["frame path", "node"], []),
    ("2 a failed capture breaks the process", [], ["test_on_cuda_an_invalidated_capture_is_cleaned_up_and_later_"
                                                   "captures_work", "test_on_cuda_the_models_programs_capture_after_"
                                                   "a_failed_capture"]),
    ("3 replays read freed memory", [], ["test_cuda_graphs_of_the_path_publish_what_the_eager_path_does"]),
    ("4 CUDA tests fail on numerics", ["cuda tests"], []),
    ("5 the stream pool wraps around", [], ["test_on_cuda_dedicated_streams_survive_the_pool_wrapping"]),
    ("6 a recompile per batch bucket", ["compiled tests"], []),
    ("7 the check never reaches the frame path", ["frame path"], []),
]


# ---------------------------------------------------------------------- the ROS wheels
SITECUSTOMIZE = '''"""Written by benchmarks/device_check.py: {target} as a site directory, so its .pth files run."""
import importlib.machinery
import importlib.util
import os
import site
import sys

site.addsitedir({target!r})
_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != _here])
if _spec is not None and _spec.loader is not None:  # the image's own sitecustomize, if it has one
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
'''


def install_wheels(wheels: List[Path], target: Path) -> Path:
    """pip-install ``wheels`` (no index, no dependencies) into ``target`` and write a sitecustomize that makes it a
    site directory; returns the folder to put first on PYTHONPATH."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(target)] + [str(w) for w in wheels], check=True)
    boot = target.parent / f"{target.name}_boot"
    boot.mkdir(parents=True, exist_ok=True)
    (boot / "sitecustomize.py").write_text(SITECUSTOMIZE.format(target=str(target)))
    return boot


def probe_wheel(folder: Path) -> Path:
    """A wheel whose .pth hook sets an environment variable at start-up, as the ROS wheels' bootstrapper does:
    the dry run installs it the way the real wheels are installed and checks that the hook ran."""
    path = folder / "space_clip_probe-1.0-py3-none-any.whl"
    files = {
        "space_clip_probe.py": "import os\nos.environ['SPACE_CLIP_PROBE'] = 'hooked'\n",
        "space_clip_probe.pth": "import space_clip_probe\n",
        "space_clip_probe-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: space-clip-probe\nVersion: 1.0\n",
        "space_clip_probe-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: device_check\nRoot-Is-Purelib: true\n"
                                                "Tag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + "space_clip_probe-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
        archive.writestr("space_clip_probe-1.0.dist-info/RECORD", record)
    return path


# ---------------------------------------------------------------------- the check
class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.dry_run = args.dry_run
        self.out = Path(args.out or os.environ.get("OUT") or tempfile.mkdtemp(prefix="space_clip_check_"))
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="space_clip_check_work_"))
        self.started = time.monotonic()
        self.deadline = self.started + args.deadline
        self.only = set(args.only.split(",")) if args.only else None
        self.log = open(self.out / "check.log", "w")
        self.tables = open(self.out / "tables.md", "w")
        self.outcomes: List[Outcome] = []
        self.begun: Dict[str, float] = {}  # step -> seconds into the check when it began
        self.ros_problem: Optional[str] = "not checked"
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                        HF_HUB_DISABLE_PROGRESS_BARS="1", TQDM_DISABLE="1")
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), self.env.get("PYTHONPATH")) if p)
        # One compile cache for every step (tests and benchmarks), and exports cached apart from the user's.
        self.env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(self.work / "inductor"))
        self.env.setdefault("SPACE_CLIP_ROS_CACHE", str(self.work / "onnx"))

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text + "\n")
        self.log.flush()

    def wanted(self, name: str, default: bool = True) -> bool:
        return default if self.only is None else name in self.only

    # ------------------------------------------------------------------ a step
    def run(self, name: str, argv: List[str], cap: float) -> Outcome:
        """Run ``argv`` for at most ``cap`` seconds, its output streamed to the console, check.log and (tables)
        tables.md; a step past its cap is stopped with its whole process group."""
        self.say(f"\n== {name}: {' '.join(argv[1:])} (cap {cap:.0f} s, {self.left():.0f} s left, "
                 f"{time.monotonic() - self.started:.0f} s into the check)")
        self.begun[name] = time.monotonic() - self.started
        self.tables.write(f"\n## {name}\n\n")
        start = time.monotonic()
        proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", start_new_session=True)
        last_caption = [""]
        output: List[str] = []

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                output.append(line)
                self.say(line)
                if line.startswith("|"):
                    if last_caption[0]:
                        self.tables.write(f"{last_caption[0]}\n\n")
                        last_caption[0] = ""
                    self.tables.write(line + "\n")
                elif line.strip():
                    if not last_caption[0] and line.startswith(("per-", "Part", "space_clip_ros node", "start-up",
                                                                "machine", "scene")):
                        last_caption[0] = line
                    elif "target" in line or line.startswith(("not run", "the trained", "dry run")):
                        self.tables.write(f"\n{line}\n")
                else:
                    self.tables.write("\n")
                self.tables.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout=cap)
            status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            status = f"stopped at its {cap:.0f} s cap"
        reader.join(timeout=10)
        seconds = time.monotonic() - start
        self.say(f"== {name}: {status} after {seconds:.0f} s")
        return Outcome(name, status, seconds, output=output)

    def step(self, step: Step) -> None:
        if not self.wanted(step.name, step.default):
            return
        reason = step.needs(self) if step.needs else None
        if reason:
            self.skip(step.name, reason)
            return
        cap = min(step.cap_s, self.left() - 5)
        if cap < step.min_s:
            self.skip(step.name, f"{self.left():.0f} s left of the deadline, it needs {step.min_s:.0f} s")
            return
        argv = step.argv(self)
        result = self.work / f"{step.name.replace(' ', '_')}.json"
        if step.json:
            argv += ["--json", str(result)]
        if self.dry_run and step.json:
            argv += ["--dry-run"]
        outcome = self.run(step.name, argv, cap)
        if step.json and result.is_file():
            outcome.data = json.loads(result.read_text())
            outcome.headline = outcome.data.get("headline", "")
        if step.name in ("cuda tests", "compiled tests"):
            outcome.headline = pytest_counts(outcome.output, self.dry_run)
        self.outcomes.append(outcome)

    def skip(self, name: str, reason: str) -> None:
        self.say(f"\n== {name}: skipped: {reason}")
        self.outcomes.append(Outcome(name, f"skipped: {reason}", 0.0))

    # ------------------------------------------------------------------ the fixed steps
    def machine(self) -> None:
        start = time.monotonic()
        lines = [time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())]
        smi = shutil.which("nvidia-smi")
        if smi:
            lines.append(subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv"],
                                        capture_output=True, text=True, timeout=30).stdout.strip())
        else:
            lines.append("nvidia-smi: not on this machine")
        probe = subprocess.run([sys.executable, "-c", "import torch, transformers; print('python', "
                                "__import__('platform').python_version(), 'torch', torch.__version__, 'CUDA', "
                                "torch.version.cuda, 'transformers', transformers.__version__, 'device', "
                                "torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')"],
                               capture_output=True, text=True, env=self.env, timeout=120)
        lines.append((probe.stdout + probe.stderr).strip())
        text = "\n".join(lines)
        (self.out / "machine.txt").write_text(text + "\n")
        self.say("== machine\n" + text)
        cuda = "device none" not in text
        status = "ok" if probe.returncode == 0 and (cuda or self.dry_run) else "no CUDA device"
        headline = text.splitlines()[-1]
        self.outcomes.append(Outcome("machine", status, time.monotonic() - start, headline))

    def wheels(self, folder: Path) -> None:
        start = time.monotonic()
        found = sorted(folder.glob("*.whl")) if folder.is_dir() else []
        if self.dry_run:
            found = found + [probe_wheel(self.work)]
        if not found:
            self.ros_problem = (f"no ROS wheels in {folder} (run benchmarks/device_wheels.sh on your machine and "
                                "carry .whl)")
            self.skip("ros wheels", self.ros_problem)
            return
        self.say(f"\n== ros wheels: {len(found)} wheels from {folder}")
        try:
            boot = install_wheels(found, self.work / "site")
        except subprocess.CalledProcessError as error:
            self.ros_problem = f"pip could not install the wheels (exit {error.returncode})"
            self.outcomes.append(Outcome("ros wheels", f"failed: {self.ros_problem}", time.monotonic() - start))
            return
        self.env["PYTHONPATH"] = os.pathsep.join([str(boot), self.env["PYTHONPATH"]])
        # rclpy from the wheels, or (a dry run without them) from this environment.
        checks = ["import rclpy; rclpy.init; import sensor_msgs.msg, diagnostic_msgs.msg; print('rclpy', "
                  "rclpy.__file__)"]
        if self.dry_run:
            checks.append("import os; assert os.environ.get('SPACE_CLIP_PROBE') == 'hooked', 'the .pth hook did "
                          "not run'; print('a wheel start-up hook ran')")
        problems = []
        for code in checks:
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=self.env,
                                  timeout=120)
            self.say((done.stdout + done.stderr).strip())
            if done.returncode != 0:
                problems.append((done.stderr.strip().splitlines() or ["?"])[-1])
        self.ros_problem = "; ".join(problems) or None
        status = "ok" if not problems else f"failed: rclpy is not usable: {self.ros_problem}"
        usable = "usable" if not self.ros_problem else "NOT usable"
        self.outcomes.append(Outcome("ros wheels", status, time.monotonic() - start,
                                     f"{len(found)} wheels; rclpy {usable}"))

    # ------------------------------------------------------------------ the end
    def summary(self, started: float) -> int:
        lines = ["| step | status | s | result |", "|---|---|---|---|"]
        for o in self.outcomes:
            lines.append(f"| {o.name} | {o.status} | {o.seconds:.0f} | {o.headline.replace('|', '/')} |")
        defects = ["| defect (issue 31) | on this GPU | judged by |", "|---|---|---|"]
        for title, verdict, by in self.verdicts():
            defects.append(f"| {title} | {verdict} | {by} |")
        total = time.monotonic() - started
        text = "\n".join(defects) + "\n\n" + "\n".join(lines)
        title = f"device check{' (dry run)' if self.dry_run else ''}: {total:.0f} s in all"
        (self.out / "summary.md").write_text(f"# {title}\n\n{text}\n")
        (self.out / "results.json").write_text(json.dumps(
            {o.name: {"status": o.status, "seconds": o.seconds, "headline": o.headline, **o.data}
             for o in self.outcomes}, indent=2, default=str))
        self.say(f"\n{title}\n{text}")
        self.log.close()
        self.tables.close()
        shutil.rmtree(self.work, ignore_errors=True)
        bad = [o for o in self.outcomes if not (o.status == "ok" or o.status.startswith("skipped"))]
        return 1 if bad else 0

    def verdicts(self) -> List[tuple]:
        """(defect, verdict, what it was judged by) for each of :data:`DEFECTS`: ``fixed`` when every step and test
        that shows it ran and passed on this GPU, ``NOT fixed`` when one failed, ``not seen`` otherwise."""
        if self.dry_run:
            return [(title, "not seen (dry run)", ", ".join(steps + tests)) for title, steps, tests in DEFECTS]
        statuses = {o.name: o.status for o in self.outcomes}
        tests: Dict[str, str] = {}
        for xml in ("cuda_tests.xml", "compiled_tests.xml"):
            tests.update(junit_results(self.out / xml))
        out = []
        for title, steps, names in DEFECTS:
            seen = [(f"step {n}", statuses.get(n, "not run")) for n in steps]
            seen += [(n, tests.get(n, "not run")) for n in names]
            if title.startswith("7 "):
                begun = self.begun.get("frame path")
                seen.append(("frame path within 240 s", "ok" if begun is not None and begun <= 240 else
                             f"began at {begun:.0f} s" if begun is not None else "not run"))
            failed = [f"{n}: {status}" for n, status in seen if status not in ("ok", "passed")
                      and not status.startswith(("skipped", "not run"))]
            missing = [f"{n}: {status}" for n, status in seen if status.startswith(("skipped", "not run"))]
            verdict = (f"NOT fixed ({'; '.join(failed)})" if failed else
                       f"not seen ({'; '.join(missing)})" if missing else "fixed")
            out.append((title, verdict, ", ".join(n for n, _ in seen)))
        return out


def junit_results(path: Path) -> Dict[str, str]:
    """Test name -> passed, failed, error or skipped, from a JUnit file; a parametrized test also under its name
    without the brackets: failed if any case failed, passed if none failed and one passed."""
    import xml.etree.ElementTree as ElementTree

    if not path.is_file():
        return {}
    cases: Dict[str, List[str]] = {}
    results: Dict[str, str] = {}
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        status = "passed"
        for child, word in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            if case.find(child) is not None:
                status = word
        results[name] = status
        cases.setdefault(name.split("[")[0], []).append(status)
    for base, statuses in cases.items():
        bad = [s for s in statuses if s in ("failed", "error")]
        results[base] = bad[0] if bad else "passed" if "passed" in statuses else "skipped"
    return results


def pytest_counts(lines: List[str], dry_run: bool) -> str:
    """pytest's closing counts (passed, failed, skipped, errors; collected in a dry run) from its output."""
    for line in reversed(lines):
        stripped = line.strip("= ").strip()
        if dry_run and "collected" in stripped:
            return stripped
        if any(word in stripped for word in (" passed", " failed", " skipped", " error", "no tests ran")) \
                and (" in " in stripped):
            return stripped
    return "no pytest summary line"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="each step as far as it goes without CUDA (CI)")
    parser.add_argument("--deadline", type=float, default=460.0, help="seconds for the whole check (default 460)")
    parser.add_argument("--out", help="where the logs and tables go (default $OUT, else a new temp folder)")
    parser.add_argument("--wheels", type=Path, default=ROOT / ".whl", help="the ROS wheels to install (.whl/)")
    parser.add_argument("--only", help="comma-separated step names to run (default all)")
    args = parser.parse_args(argv)
    names = {"machine"} | {s.name for s in python_steps()}
    if args.only and not set(args.only.split(",")) <= names:
        parser.error(f"--only takes step names from {sorted(names)}")
    started = time.monotonic()
    check = Check(args)
    check.say(f"device check{' (dry run)' if args.dry_run else ''}: results in {check.out}, deadline "
              f"{args.deadline:.0f} s")
    if check.wanted("machine"):
        check.machine()
    for step in python_steps():
        if step.name == "ros wheels":
            if check.wanted("ros wheels") or check.wanted("node"):
                check.wheels(args.wheels)
        else:
            check.step(step)
    return check.summary(started)


if __name__ == "__main__":
    sys.exit(main())
