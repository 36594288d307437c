#!/usr/bin/env bash
# Builds the aixds container image as an OCI image-layout tar archive at OUT, without a container
# daemon and without pulling a base image: a release build of aixds (or --binary PATH, an aixds
# already built for this machine), the libraries it links from this machine
# (hack/image-rootfs.sh) and the config in the Dockerfile's final stage
# (hack/image-archive.py). The same commit and binary give the same archive, byte for byte.
#
# Usage: hack/image.sh OUT [--binary PATH]
# Prints the image name (aixds:VERSION), its manifest digest and OUT.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage="usage: $0 OUT [--binary PATH]"
out=""
binary=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --binary)
      [[ $# -ge 2 ]] || { echo "$usage" >&2; exit 2; }
      binary="$2"
      shift 2
      ;;
    -h|--help)
      echo "$usage"
      exit 0
      ;;
    -*)
      echo "$usage" >&2
      exit 2
      ;;
    *)
      [[ -z "$out" ]] || { echo "$usage" >&2; exit 2; }
      out="$1"
      shift
      ;;
  esac
done
[[ -n "$out" ]] || { echo "$usage" >&2; exit 2; }

if [[ -z "$binary" ]]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
  cargo build --manifest-path "$root/Cargo.toml" --release --locked --bin aixds
  binary="$CARGO_TARGET_DIR/release/aixds"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
bash "$root/hack/image-rootfs.sh" "$binary" "$work/rootfs"
python3 "$root/hack/image-archive.py" "$work/rootfs" "$out"
