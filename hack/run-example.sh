#!/usr/bin/env bash
# The main job on one machine: installs Envoy (hack/install.sh), starts the two example upstreams
# (e2e/upstream.py on 127.0.0.1:18081 and :18082), and runs `aixds run examples/` with Envoy
# listening on 127.0.0.1:1975. Try, in another terminal:
#   curl -s localhost:1975/v1/chat/completions -H 'x-ai-eg-model: model-a' \
#        -d '{"model":"model-a","messages":[{"role":"user","content":"hi"}]}'
# Edit examples/quickstart.yaml while it runs: routing follows without a restart. Ctrl-C stops all.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aixds-target}"

bash hack/install.sh
cargo build --locked --bin aixds

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
.venv/bin/python e2e/upstream.py --host 127.0.0.1 --port 18081 --id upstream-a &
pids+=($!)
.venv/bin/python e2e/upstream.py --host 127.0.0.1 --port 18082 --id upstream-b &
pids+=($!)

"$CARGO_TARGET_DIR/debug/aixds" run examples/ --listener-address 127.0.0.1 "$@"
