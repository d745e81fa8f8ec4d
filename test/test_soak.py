"""A short soak of depth_node (benchmarks/soak_node.py): 2,000 full-size frames at the publisher's maximum
rate and 5 lifecycle cycles, with the benchmark's own checks (no crash, bounded RSS growth and latency, newest frame
processed, no growth over the cycles)."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy not installed: pip install -e '.[ros]'")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "soak_node.py"


def test_short_soak_holds_the_checks(checkpoint, tmp_path):
    spec = importlib.util.spec_from_file_location("soak_node", SCRIPT)
    soak_node = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak_node)
    result = soak_node.soak(checkpoint, frames=2000, cycles=5, size=(1242, 375), device="cpu", backend="eager",
                            workdir=tmp_path)
    print(soak_node.report(result, (1242, 375), "cpu"))
    assert result["failures"] == []
    assert result["frames"] == 2000 and 0 < result["outputs"] <= 2000
    assert result["dropped"] + result["outputs"] <= 2000
    assert len(result["cycle_stats"]) == 6
    # The checks can fail: a node that queued frames would break the latency bound.
    assert soak_node.checks({**result, "p99": 3 * result["bare_ms"] + 251.0})
    assert soak_node.checks({**result, "rss_growth": 21.0})
    assert soak_node.checks({**result, "p50_last": 1.5 * result["p50_first"] + result["bare_ms"] + 1.0})
