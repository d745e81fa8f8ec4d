#!/usr/bin/env bash
# The GPU check, as one call on the machine the device tool lends (see docs/performance.md, "The GPU check"):
#   here:  bash benchmarks/device_wheels.sh          # ROS 2 Jazzy wheels for Python 3.12 into .whl/ (41 MB)
#   then:  run(command="bash benchmarks/device_check.sh", carry=[".whl"], timeout_s=540)
# Everything is in benchmarks/device_check.py: a 460 s deadline, each step capped, tables as they are measured,
# a summary table last, at most 6 files in $OUT. Uses the machine's own python3 and this working tree as it is.
set -uo pipefail
cd "$(dirname "$0")/.."
exec python3 benchmarks/device_check.py "$@"
