#!/usr/bin/env python3
"""Propagation benchmark (issue 3): from a manifest edit to the first 200 through a real Envoy.

Stdlib only; run it through hack/bench-propagation.sh, which builds the release binary first.

For each size N it starts one e2e/upstream.py, `aixds run --no-envoy` over a directory of
manifests (a Gateway, then N units of AIGatewayRoute -> its own AIServiceBackend -> its own ip
Backend, UNITS_PER_FILE units per file) and an Envoy bootstrapped by `aixds bootstrap`. Then:

- peak RSS (VmHWM) of aixds once it has loaded (it binds its xDS port after the first snapshot is
  published), after Envoy took the whole config, and after the edits;
- baseline: latency of requests that need no config change (an existing model), same Envoy;
- edits: each rewrites one file (temp file + rename) so that one route matches a fresh model
  name, and polls that model over one keep-alive connection until the first 200. Time is from
  just before the write to the 200. Edits are spaced so that each is its own batch;
- aixds' own batch time per edit, from its log ("applied source changes ... micros=");
- Envoy's own time applying route updates (its scoped RDS and RDS `update_duration` histograms);
- Envoy's resident memory once it serves every model (`envoy_rss_mib_synced`).

`--load-only` stops after aixds has loaded: time to serve xDS and peak RSS per object, for sizes
at which Envoy would take minutes to take the config.

Loopback only; every wait is bounded.
"""

import argparse
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODELAY_UPSTREAM = (
    "import runpy, socketserver, sys\n"
    "socketserver.StreamRequestHandler.disable_nagle_algorithm = True\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, q):
    """Nearest-rank percentile of a non-empty list."""
    v = sorted(values)
    rank = max(1, min(len(v), int(-(-q * len(v) // 1))))
    return v[rank - 1]


def proc_status(pid):
    """VmHWM and VmRSS of `pid` in MiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0]) / 1024
    return out


def unit_yaml(i, model, upstream):
    host, port = upstream
    return (
        f"apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\n"
        f"metadata: {{name: route-{i}}}\n"
        f"spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n"
        f"  - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {model}}}]}}]\n"
        f"    backendRefs: [{{name: asb-{i}}}]\n"
        f"---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\n"
        f"metadata: {{name: asb-{i}}}\n"
        f"spec: {{schema: {{name: OpenAI}}, backendRef: {{name: backend-{i}, "
        f"group: gateway.envoyproxy.io, kind: Backend}}}}\n"
        f"---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\n"
        f"metadata: {{name: backend-{i}}}\n"
        f"spec: {{endpoints: [{{ip: {{address: \"{host}\", port: {port}}}}}]}}\n"
    )


class Manifests:
    def __init__(self, directory, units, per_file, listener_port, upstream):
        self.dir = directory
        self.units = units
        self.per_file = per_file
        self.upstream = upstream
        self.models = [f"model-{i}" for i in range(units)]
        with open(os.path.join(directory, "gateway.yaml"), "w") as f:
            f.write(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\n"
                "spec: {gatewayClassName: aixds, listeners: "
                f"[{{name: http, protocol: HTTP, port: {listener_port}}}]}}\n"
            )
        for f in range(0, units, per_file):
            self.write_file(f // per_file)

    def path(self, file_index):
        return os.path.join(self.dir, f"units-{file_index:05}.yaml")

    def write_file(self, file_index):
        start = file_index * self.per_file
        end = min(self.units, start + self.per_file)
        text = "---\n".join(unit_yaml(i, self.models[i], self.upstream) for i in range(start, end))
        # Atomic, as editors and `kubectl`-style tools write: a reader never sees half a file.
        tmp = os.path.join(self.dir, f".units-{file_index:05}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.path(file_index))

    def edit(self, unit, model):
        self.models[unit] = model
        self.write_file(unit // self.per_file)


class Client:
    """One keep-alive HTTP/1.1 connection to Envoy's listener, reopened when Envoy closes it."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def status(self, model):
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                # The model goes in the body too: aixds' ext_proc routes by the body's model.
                body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
                self.conn.request(
                    "POST",
                    "/v1/chat/completions",
                    body=json.dumps(body).encode(),
                    headers={"content-type": "application/json", "x-ai-eg-model": model},
                )
                resp = self.conn.getresponse()
                resp.read()
                if resp.getheader("connection", "").lower() == "close":
                    self.close()
                return resp.status
            except (OSError, http.client.HTTPException):
                self.close()
        return 0

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def wait_until(deadline_s, what, check, interval=0.01):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise SystemExit(f"timed out after {deadline_s} s waiting for {what}")


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def admin_get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def stop(proc):
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_size(args, units):
    work = tempfile.mkdtemp(prefix=f"aixds-bench-{units}-")
    manifests_dir = os.path.join(work, "manifests")
    os.mkdir(manifests_dir)
    procs = []
    try:
        upstream_args = ["--host", "127.0.0.1", "--port", "0", "--id", "bench"]
        script = os.path.join(ROOT, "e2e/upstream.py")
        if args.stock_upstream:
            command = [args.python, script, *upstream_args]
        else:
            # upstream.py writes a response's head and body in two send()s; with Nagle on, the
            # body waits for Envoy's delayed ACK (40 ms on Linux) and every request takes ~44 ms,
            # which would swamp what is measured here. Same script, TCP_NODELAY on (upstream.py
            # now sets it itself; this keeps older checkouts comparable).
            command = [args.python, "-c", NODELAY_UPSTREAM, script, *upstream_args]
        upstream = subprocess.Popen(
            command,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        procs.append(upstream)
        line = upstream.stdout.readline().strip()
        host, port = line.removeprefix("listening on ").rsplit(":", 1)
        listener_port, xds_port, admin_port = free_port(), free_port(), free_port()

        t = time.monotonic()
        m = Manifests(manifests_dir, units, args.units_per_file, listener_port, (host, int(port)))
        write_s = time.monotonic() - t

        log_path = os.path.join(work, "aixds.log")
        log = open(log_path, "w")
        t = time.monotonic()
        command = [args.aixds, "run", "--no-envoy", "--listener-address", "127.0.0.1",
                   "--xds-address", f"127.0.0.1:{xds_port}"]
        run_help = subprocess.run([args.aixds, "run", "--help"], capture_output=True, text=True)
        if "--admin-address" in run_help.stdout:
            # Its own admin server defaults to a fixed port; several runs must not collide.
            command += ["--admin-address", f"127.0.0.1:{free_port()}"]
        if "--insecure-grpc" in run_help.stdout:
            # The benchmark's Envoy connects over loopback without a client certificate.
            command += ["--insecure-grpc"]
        if "--picker-address" in run_help.stdout:
            # So does the endpoint picker's listener.
            command += ["--picker-address", "127.0.0.1:0"]
        aixds = subprocess.Popen(
            [*command, manifests_dir],
            stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "AIXDS_LOG": "info"},
        )
        procs.append(aixds)
        wait_until(120, "aixds to serve xDS", lambda: port_open(xds_port) or aixds.poll() is not None)
        if aixds.poll() is not None:
            raise SystemExit(f"aixds exited: see {log_path}")
        load_s = time.monotonic() - t
        rss_loaded = proc_status(aixds.pid)
        if args.load_only:
            size = sum(os.path.getsize(os.path.join(manifests_dir, f)) for f in os.listdir(manifests_dir))
            return {
                "units": units,
                "objects": 3 * units + 1,
                "files": -(-units // args.units_per_file),
                "manifest_mib": round(size / 2**20, 1),
                "loadavg_at_end": open("/proc/loadavg").read().split()[:3],
                "aixds_load_s": round(load_s, 2),
                "rss_mib": {"loaded": rss_loaded},
                "rss_bytes_per_object": round(rss_loaded["VmHWM"] * 2**20 / (3 * units + 1)),
            }

        bootstrap = subprocess.run(
            [args.aixds, "bootstrap", "--xds-address", f"127.0.0.1:{xds_port}",
             "--node-id", "bench", "--envoy-admin-port", str(admin_port)],
            check=True, capture_output=True, text=True,
        ).stdout
        bootstrap_path = os.path.join(work, "bootstrap.yaml")
        with open(bootstrap_path, "w") as f:
            f.write(bootstrap)
        t = time.monotonic()
        envoy = subprocess.Popen(
            [args.envoy, "-c", bootstrap_path, "--disable-hot-restart",
             "--concurrency", str(args.envoy_concurrency), "--log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "envoy.log"), "w"),
        )
        procs.append(envoy)
        client = Client(listener_port)
        last = m.models[-1]
        wait_until(150, "Envoy to serve every model", lambda: client.status(last) == 200, 0.05)
        envoy_ready_s = time.monotonic() - t
        rss_envoy = proc_status(aixds.pid)
        envoy_rss = proc_status(envoy.pid)

        # Baseline: a model whose route is already there, same connection, same Envoy.
        baseline_model = m.models[units // 2]
        for _ in range(20):
            client.status(baseline_model)
        baseline = []
        for _ in range(args.baseline_requests):
            t = time.perf_counter()
            status = client.status(baseline_model)
            baseline.append((time.perf_counter() - t) * 1e3)
            assert status == 200, status

        with open(log_path) as f:
            batches_before = sum("applied source changes" in line for line in f)
        latencies, polls, wall_starts = [], [], []
        for e in range(args.edits):
            unit = (e * 7919 + 13) % units
            model = f"model-{unit}-edit-{e}"
            wall_starts.append(time.time())
            t0 = time.perf_counter()
            m.edit(unit, model)
            deadline = t0 + args.edit_timeout
            n = 0
            while True:
                n += 1
                status = client.status(model)
                now = time.perf_counter()
                if status == 200:
                    break
                if now > deadline:
                    raise SystemExit(f"edit {e}: {model} not served after {args.edit_timeout} s")
                if args.poll_interval > 0:
                    time.sleep(args.poll_interval)
            latencies.append((now - t0) * 1e3)
            polls.append(n)
            # The next edit is a batch of its own: past the 200 ms burst limit of the watcher.
            time.sleep(args.gap)
        rss_edits = proc_status(aixds.pid)

        # (wall-clock time the batch was logged, right after publishing; its duration in ms)
        batches = []
        with open(log_path) as f:
            for line in f:
                if "applied source changes" in line:
                    line = ANSI.sub("", line)
                    found = re.search(r"micros=(\d+)", line)
                    logged = datetime.datetime.fromisoformat(line.split()[0]).timestamp()
                    if found:
                        batches.append((logged, int(found.group(1)) / 1e3))
        batches = batches[batches_before:]
        batch_ms = [ms for _, ms in batches]
        # With one batch per edit, each edit's time splits into: file watch and debounce (write
        # to batch start), the batch (reload, graph, compile, publish), and the rest (push,
        # Envoy applying the update, and the poll that sees it).
        split = None
        if len(batches) == len(latencies):
            watch, rest = [], []
            for (logged, ms), start, total in zip(batches, wall_starts, latencies):
                watch.append((logged - start) * 1e3 - ms)
                rest.append(start * 1e3 + total - logged * 1e3)
            split = {"watch_and_debounce_ms": summary(watch), "push_envoy_poll_ms": summary(rest)}
        rejected = sum(
            int(v) for v in re.findall(r"update_rejected: (\d+)", admin_get(admin_port, "/stats?filter=update_rejected"))
        )
        envoy_rds = rds_update_ms(admin_port)
        return {
            "units": units,
            "loadavg_at_end": open("/proc/loadavg").read().split()[:3],
            "files": -(-units // args.units_per_file),
            "write_manifests_s": round(write_s, 2),
            "aixds_load_s": round(load_s, 2),
            "envoy_ready_s": round(envoy_ready_s, 2),
            "rss_mib": {
                "loaded": rss_loaded,
                "after_envoy_synced": rss_envoy,
                "after_edits": rss_edits,
            },
            "envoy_rss_mib_synced": envoy_rss,
            "baseline_ms": summary(baseline),
            "edit_to_200_ms": summary(latencies),
            "polls_per_edit_p50": percentile(polls, 0.5),
            "aixds_batches": len(batch_ms),
            "aixds_batch_ms": summary(batch_ms) if batch_ms else None,
            "split": split,
            "envoy_update_rejected": rejected,
            "envoy_rds_update_ms": envoy_rds,
        }
    finally:
        for p in reversed(procs):
            stop(p)
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def rds_update_ms(admin_port):
    """Envoy's own time applying route updates: its `scoped_rds.*.update_duration` histograms
    (per listener: the scopes, which hold their routes) and `rds.*.update_duration` ones (a
    RouteConfiguration fetched by name), each cumulative over the run; the largest p50 and p99
    among them and how many there are."""
    text = admin_get(admin_port, "/stats?filter=update_duration")
    as_float = lambda v: None if v in (None, "nan") else round(float(v), 2)
    p50s, p99s = [], []
    for line in text.splitlines():
        name, _, values = line.partition(": ")
        if ".rds." not in name and ".scoped_rds." not in name:
            continue
        cumulative = dict(re.findall(r"P([0-9.]+)\([^,]*,([^)]*)\)", values))
        p50, p99 = as_float(cumulative.get("50")), as_float(cumulative.get("99"))
        if p50 is not None:
            p50s.append(p50)
        if p99 is not None:
            p99s.append(p99)
    if not p50s:
        return None
    return {"configs": len(p50s), "max_p50": max(p50s), "max_p99": max(p99s, default=None)}


def summary(values):
    return {
        "n": len(values),
        "p50": round(percentile(values, 0.5), 2),
        "p90": round(percentile(values, 0.9), 2),
        "p99": round(percentile(values, 0.99), 2),
        "max": round(max(values), 2),
        "min": round(min(values), 2),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--routes", type=int, nargs="+", default=[100, 10_000])
    p.add_argument("--edits", type=int, default=50)
    p.add_argument("--units-per-file", type=int, default=100)
    p.add_argument("--baseline-requests", type=int, default=200)
    p.add_argument("--gap", type=float, default=0.3, help="seconds between edits")
    p.add_argument("--edit-timeout", type=float, default=10.0)
    p.add_argument(
        "--poll-interval",
        type=float,
        default=0.001,
        help="seconds to sleep between polls; back to back (0), the Python loop holds one of "
        "the two cores that aixds and Envoy need",
    )
    p.add_argument("--envoy-concurrency", type=int, default=1)
    p.add_argument("--aixds", default=os.path.join(ROOT, "target/release/aixds"))
    p.add_argument("--envoy", default=os.path.join(ROOT, ".venv/bin/envoy"))
    p.add_argument("--python", default=os.path.join(ROOT, ".venv/bin/python"))
    p.add_argument(
        "--stock-upstream",
        action="store_true",
        help="run e2e/upstream.py as is (before 2026-11-26 it left Nagle on: ~44 ms per request)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    p.add_argument(
        "--load-only", action="store_true",
        help="only start aixds over the manifests: time to serve xDS and peak RSS, no Envoy",
    )
    args = p.parse_args()
    for units in args.routes:
        result = run_size(args, units)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
