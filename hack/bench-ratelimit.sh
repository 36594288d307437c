#!/usr/bin/env bash
# Rate limit benchmark (issue 15): the latency a token budget's check adds, with counters in
# memory and in Redis, against the same gateway's route without a policy. Builds the release
# binary, installs wrk and redis-server (Debian) if missing, then runs e2e/bench_ratelimit.py.
# Extra arguments go to the script, e.g. `--rounds 3 --connections 1`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
.venv/bin/python e2e/bench_ratelimit.py --aixds "$bench_bin" "$@"
