#!/usr/bin/env bash
# Translation ext_proc benchmark (issue 4): latency and requests/s with the ext_proc against the
# same Envoy routes without it, for 1 KB and 32 KB chat bodies, plus time to first token when
# streaming. Builds the release binary, installs wrk (Debian) if missing, then runs
# e2e/bench_extproc.py. Extra arguments go to the script, e.g. `--rounds 3 --connections 1`, or
# `--baseline-aixds OLD_BINARY` to measure another build side by side in the same run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
.venv/bin/python e2e/bench_extproc.py --aixds "$bench_bin" "$@"
