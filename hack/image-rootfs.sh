#!/usr/bin/env bash
# Fills DIR with the root filesystem of the aixds image: BINARY as /aixds, the shared libraries
# it links (as `ldd` finds them on this machine, the dynamic loader included), /etc/passwd and
# /etc/group with the nonroot user 65532, the CA certificates and /tmp. Nothing else: no shell,
# no package manager. Used by hack/image.sh and by the Dockerfile's build stage.
#
# Usage: hack/image-rootfs.sh BINARY DIR   (DIR must not exist yet)
set -euo pipefail
umask 022

if [[ $# -ne 2 ]]; then
  echo "usage: $0 BINARY DIR" >&2
  exit 2
fi
binary="$1"
rootfs="$2"
certs=/etc/ssl/certs/ca-certificates.crt

if [[ -e "$rootfs" ]]; then
  echo "$rootfs already exists; give a new directory" >&2
  exit 1
fi
if [[ ! -r "$certs" ]]; then
  echo "$certs is missing: install the ca-certificates package" >&2
  exit 1
fi
# Every library `ldd` resolves, and the loader (its line has no `=>`). A library it cannot find
# would make the image fail at start, so that fails here.
if ! deps="$(ldd "$binary")"; then
  echo "ldd cannot read $binary (it must be a dynamically linked binary for this machine)" >&2
  exit 1
fi
if grep -q 'not found' <<<"$deps"; then
  echo "$binary links libraries this machine lacks:" >&2
  grep 'not found' <<<"$deps" >&2
  exit 1
fi
libraries="$(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$deps")"

mkdir -p "$rootfs"
install -m 0755 "$binary" "$rootfs/aixds"
for library in $libraries; do
  # The file itself, not the symlink the path may be (e.g. libc.so.6 -> libc-2.36.so).
  install -D -m 0755 "$(readlink -f "$library")" "$rootfs$library"
done
install -D -m 0644 "$certs" "$rootfs$certs"
mkdir -p "$rootfs/etc"
printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
  'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin' > "$rootfs/etc/passwd"
printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' > "$rootfs/etc/group"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
install -d -m 1777 "$rootfs/tmp"
