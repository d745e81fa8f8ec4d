"""benchmarks/bench_extras_against.py runs both versions side by side: the revision's package loads beside today's
and every row of the table gets both timings (how fast is measured by the benchmark, not here)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_comparison_with_an_earlier_revision_runs():
    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", "718399d^{commit}"]).returncode != 0:
        pytest.skip("revision 718399d is not in this clone (a shallow clone?)")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_extras_against.py"), "--repeats", "1"],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "ms |" not in line]
    assert len(rows) == 4, result.stdout
    for row in rows:
        then, now, ratio = (float(cell) for cell in row.strip("| ").split(" | ")[1:])
        assert then > 0 and now > 0 and ratio == pytest.approx(now / then, abs=0.01)
