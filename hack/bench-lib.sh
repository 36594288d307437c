# Sourced by the hack/bench-*.sh scripts: installs the e2e tooling and wrk (Debian) if missing,
# builds the release binary and copies it to a private directory, whose path is in $bench_bin.
# The target directory may be shared with other checkouts, whose builds replace the binary: the
# benchmark runs this checkout's build, copied.

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aixds-target}"

if [[ ! -x .venv/bin/envoy || ! -x .venv/bin/python ]] || ! command -v redis-server >/dev/null 2>&1; then
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
bench_dir="$(mktemp -d)"
trap 'rm -rf "$bench_dir"' EXIT
cp "$CARGO_TARGET_DIR/release/aixds" "$bench_dir/aixds"
bench_bin="$bench_dir/aixds"
