#!/usr/bin/env bash
# Rate limit benchmark (issue 15): the latency a token budget's check adds, with counters in
# memory and in Redis, against the same gateway's route without a policy. Builds the release
# binary, installs wrk and redis-server (Debian) if missing, then runs e2e/bench_ratelimit.py.
# Extra arguments go to the script, e.g. `--rounds 3 --connections 1`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aixds-target}"

bash hack/install.sh >/dev/null
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
.venv/bin/python e2e/bench_ratelimit.py --aixds "$bin_dir/aixds" "$@"
