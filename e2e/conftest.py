"""Shared fixtures for the end-to-end tests: upstream simulators and a running gateway
(`aixds run` with a real Envoy), each on its own loopback ports."""

import json
import os
import random
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

E2E = Path(__file__).parent
REPO = E2E.parent
UPSTREAM = E2E / "upstream.py"
# The strict fake provider servers; at the end of the path so that tests can use their helpers
# (e.g. google_token.write_service_account) while installed packages of the same name (cohere)
# still come first.
PROVIDERS = E2E / "providers"
sys.path.append(str(PROVIDERS))


# Ports handed out in this session: each test's servers get ports no earlier test had.
_given_ports = set()


def free_port():
    """A port free now, below the kernel's ephemeral range: a port the kernel picked (bind to 0)
    can be taken by any process's outgoing connection before the test's server binds it, and a
    server then fails to listen (seen as an Envoy listener NACKed with "address in use")."""
    low, _ = (int(p) for p in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for _ in range(200):
        # Below 11000 there is no room: the kernel's choice, as before.
        port = random.randrange(10000, low) if low > 11000 else 0
        if port in _given_ports:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
                port = s.getsockname()[1]
        except OSError:
            continue
        _given_ports.add(port)
        return port
    raise AssertionError("no free port below the ephemeral range")


def write_atomic(path, text):
    """Writes `text` to a hidden temporary file beside `path`, then renames it over `path`, as
    careful editors do: aixds, which watches the directory, never reads half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def free_port_on(*hosts):
    """A port free on every one of `hosts` (pods of one pool listen on the same port)."""
    for _ in range(50):
        port = free_port()
        try:
            for host in hosts:
                with socket.socket() as s:
                    s.bind((host, port))
            return port
        except OSError:
            continue
    raise AssertionError(f"no port free on all of {hosts}")


def aixds_bin():
    env = os.environ.get("AIXDS_BIN")
    if env:
        return env
    target = os.environ.get("CARGO_TARGET_DIR", str(REPO / "target"))
    return str(Path(target) / "debug" / "aixds")


def envoy_bin():
    """Envoy from $ENVOY_BIN or the virtualenv hack/install.sh makes."""
    return os.environ.get("ENVOY_BIN") or str(REPO / ".venv" / "bin" / "envoy")


class Upstream:
    """One e2e/upstream.py process (or another `script` taking the same options, such as the
    fake providers in e2e/providers/, with its own `args`) that records what it receives."""

    def __init__(self, upstream_id, tmp_path, host="127.0.0.1", port=0, script=UPSTREAM, args=()):
        self.id = upstream_id
        self.record_path = tmp_path / f"{upstream_id}.jsonl"
        self.proc = subprocess.Popen(
            [sys.executable, str(script), "--host", host, "--port", str(port),
             "--id", upstream_id, "--record", str(self.record_path), *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 15)
        line = self.proc.stdout.readline() if ready else ""
        assert line.startswith("listening on "), f"upstream did not start: {line!r}"
        self.host, port = line.split()[-1].rsplit(":", 1)
        self.port = int(port)
        self.base_url = f"http://{self.host}:{self.port}"

    def cut(self):
        """Lets one stream of a `cut` model close its connection (see upstream.py)."""
        requests.post(f"http://{self.host}:{self.port}/cut", timeout=5).raise_for_status()

    def recorded(self):
        if not self.record_path.exists():
            return []
        return [json.loads(line) for line in self.record_path.read_text().splitlines()]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Gateway:
    """`aixds run` on a manifest directory, with Envoy listening on 127.0.0.1:`port`."""

    def __init__(self, tmp_path, manifests, port, args=(), picker_port=0, env=None):
        self.dir = tmp_path / "manifests"
        self.dir.mkdir()
        self.port = port
        self.admin_port = free_port()
        self.aixds_admin = f"http://127.0.0.1:{free_port()}"
        self.write(manifests)
        self.log_path = tmp_path / "aixds.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [aixds_bin(), "run", str(self.dir),
             "--admin-address", self.aixds_admin.removeprefix("http://"),
             "--picker-address", f"127.0.0.1:{picker_port}",
             "--listener-address", "127.0.0.1", "--default-port", str(port),
             "--envoy-admin-port", str(self.admin_port), "--node-id", tmp_path.name, *args],
            cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.base_url = f"http://127.0.0.1:{port}"

    def write(self, manifests):
        write_atomic(self.dir / "gateway.yaml", manifests)

    def wait_serving(self, model, timeout=30):
        """Blocks until `model` is routed (any answer but Envoy's 404 or a refused connection)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "aixds exited; see aixds.log"
            try:
                r = requests.post(f"{self.base_url}/v1/chat/completions",
                                  headers={"x-ai-eg-model": model},
                                  json={"model": model, "messages": []}, timeout=5)
                if r.status_code != 404:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{model} not served within {timeout}s")

    def metrics(self):
        """aixds's /metrics as {'name{labels}': value}."""
        text = requests.get(f"{self.aixds_admin}/metrics", timeout=5).text
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines() if line and not line.startswith("#")}

    def rejected_updates(self):
        """The sum of Envoy's update_rejected counters; fails when Envoy does not answer or
        reports none, so that 0 always means Envoy was asked and rejected nothing."""
        response = requests.get(
            f"http://127.0.0.1:{self.admin_port}/stats?filter=update_rejected", timeout=5)
        response.raise_for_status()
        counters = [int(line.rsplit(": ", 1)[1])
                    for line in response.text.splitlines() if ": " in line]
        assert counters, f"Envoy reports no update_rejected counter: {response.text!r}"
        return sum(counters)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=15)
        self.log.close()


@pytest.fixture
def upstreams(tmp_path):
    started = []

    def start(upstream_id, host="127.0.0.1", port=0):
        u = Upstream(upstream_id, tmp_path, host, port)
        started.append(u)
        return u

    yield start
    for u in started:
        u.stop()


@pytest.fixture
def providers(tmp_path):
    """Starts strict fake provider servers: `start("bedrock", "bedrock-a", "--access-key-id", ...)`
    runs e2e/providers/bedrock.py with those arguments (see each server's --help)."""
    started = []

    def start(provider, server_id, *args, port=0):
        p = Upstream(server_id, tmp_path, port=port, script=PROVIDERS / f"{provider}.py", args=args)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


@pytest.fixture
def gateway(tmp_path):
    started = []

    def start(manifests, port=None, args=(), picker_port=0, env=None):
        g = Gateway(tmp_path, manifests, port or free_port(), args, picker_port, env)
        started.append(g)
        return g

    yield start
    for g in started:
        g.stop()


def openai_backend(name, upstream, schema="OpenAI"):
    """An AIServiceBackend and its Backend at the upstream's address."""
    return f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: {name}, namespace: default}}
spec:
  schema: {{name: {schema}}}
  backendRef: {{name: {name}, group: gateway.envoyproxy.io, kind: Backend}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: {name}, namespace: default}}
spec:
  endpoints: [{{ip: {{address: "{upstream.host}", port: {upstream.port}}}}}]
"""


def route(rules):
    """An AIGatewayRoute with one rule per (model, backend name[, request timeout])."""
    body = "".join(
        f"""  - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: "{model}"}}]}}]
    backendRefs: [{{name: {backend}}}]
""" + (f"    timeouts: {{request: {timeout[0]}}}\n" if timeout else "")
        for model, backend, *timeout in rules)
    return f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: route, namespace: default}}
spec:
  rules:
{body}"""
