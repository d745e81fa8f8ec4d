#!/usr/bin/env bash
# The GPU check, as one call on the machine the device tool lends (see README, "Speed"):
#   here:  bash benchmarks/device_wheels.sh          # ROS 2 Jazzy wheels for Python 3.12 into .whl/ (41 MB)
#   then:  run(command="bash benchmarks/device_check.sh", carry=[".whl"], timeout_s=540)
# CUDA tests of the inference backends, export and node outputs; benchmarks/bench_inference.py, the GPU training
# check (benchmarks/bench_train.py: batch-64 352x704 steps of the trainer in bf16 and fp32 against a plain fp32 loop,
# then 300 bf16 steps that must learn the synthetic KITTI scene) and (with the ROS wheels) benchmarks/bench_node.py
# on the GPU; logs and tables under $OUT. Uses the machine's own python3 (torch +
# CUDA, transformers, onnx, onnxruntime, pytest) and this working tree as it is (PYTHONPATH); wheels in .whl/ are
# installed first. Under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
echo "results in $OUT"
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'CUDA', torch.version.cuda, \
'transformers', transformers.__version__, 'device', torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/machine.txt"

status=0
# CUDA tests (they skip without a GPU; here they must run): backends against eager fp32, graph capture, export.
timeout 120 python3 -m pytest -q -p no:cacheprovider -rs test/test_backends.py test/test_export.py \
  test/test_outputs.py test/test_planning.py test/test_estimator.py test/test_alignment.py 2>&1 | tee "$OUT/cuda_tests.log" || status=1

# One table: eager fp32 (how the authors' code runs) against every backend and precision, on the GPU.
timeout 150 python3 benchmarks/bench_inference.py --device cuda --iters 30 --json "$OUT/bench_inference.json" \
  --markdown "$OUT/bench_inference.md" 2>&1 | tee "$OUT/bench_inference.log" || status=1

# Training on the GPU: throughput and peak memory against the plain fp32 loop (targets: >= 2x images/s, <= 9 GiB),
# then a few hundred bf16 steps (precision auto) that must beat predicting the mean depth on held-out frames.
timeout 130 python3 benchmarks/bench_train.py --device cuda --batch 64 --steps 8 --learn-steps 300 2>&1 \
  | tee "$OUT/bench_train.log" || status=1

# The planner outputs on the GPU: scan and filtered cloud per frame against the forward (target <= 0.3 ms).
timeout 60 python3 benchmarks/bench_node.py --device cuda --outputs-only --frames 30 2>&1 \
  | tee "$OUT/bench_outputs.log" || status=1

# Scale alignment and temporal fusion on the GPU: accuracy and cost per frame against the forward.
timeout 90 python3 benchmarks/bench_alignment.py --device cuda 2>&1 | tee "$OUT/bench_alignment.log" || status=1

# The node on the GPU, 1 and 8 cameras (needs rclpy: carry the wheels of benchmarks/device_wheels.sh).
if python3 -c "import rclpy" 2>/dev/null; then
  timeout 90 python3 benchmarks/bench_node.py --device cuda --cameras 1,8 --frames 6 --seconds 5 2>&1 \
    | tee "$OUT/bench_node.log" || status=1
else
  echo "bench_node skipped: rclpy is not importable (run benchmarks/device_wheels.sh here and carry .whl)" \
    | tee "$OUT/bench_node.log"
fi
exit $status
