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

# The chart tests (e2e/test_chart.py) render and lint with Helm's Go library, which the
# helm-python-sdk wheel bundles as a shared library: check that it loads on this machine.
if ! helm="$("$venv/bin/python" -c 'import helm_python; print("helm", helm_python.helm_sdk_version())' 2>&1)"; then
  echo "helm-python-sdk cannot load its Helm library:" >&2
  echo "$helm" >&2
  exit 1
fi
echo "$helm"

# The openssl command line makes throwaway certificates for the TLS tests (tests/it/tls.rs,
# e2e/test_chart.py). Debian's package; installed only when missing and when this script may
# use apt-get.
if command -v openssl >/dev/null 2>&1; then
  openssl version
elif [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "installing openssl"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl >/dev/null
  openssl version
else
  echo "warning: openssl is missing; install it (apt-get install openssl) for the TLS tests" >&2
fi

# Redis for the rate limit tests (e2e/test_ratelimit.py start their own redis-server on
# loopback). Debian's package; installed only when missing and when this script may use apt-get.
if command -v redis-server >/dev/null 2>&1; then
  redis-server --version
elif [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "installing redis-server"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  # Debian starts a system instance on 6379; the tests run their own.
  redis-server --version
else
  echo "warning: redis-server is missing; install it (apt-get install redis-server) for the rate limit tests" >&2
fi

# Headless Chromium for the /debug/graph HTML page test (tests/it/admin.rs). Debian's package;
# installed only when missing and when this script may use apt-get.
if command -v chromium >/dev/null 2>&1; then
  chromium --version
elif [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  chromium --version
else
  echo "warning: chromium is missing; install it (apt-get install chromium) for the HTML page test" >&2
fi
