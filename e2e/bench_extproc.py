#!/usr/bin/env python3
"""Translation ext_proc benchmark (issue 4): the latency the ext_proc adds to a request, against
the same Envoy routes with the ext_proc taken out.

Stdlib only; run it through hack/bench-extproc.sh, which builds the release binary and installs
wrk first.

Processes, all on loopback, each Envoy with one worker (`--concurrency 1`):

- upstream: an Envoy whose listener answers every request with a fixed `direct_response` (an
  OpenAI chat completion, or an Anthropic message on `/v1/messages`), so the backend costs the
  same small time on both sides; plus one e2e/upstream.py for streamed answers;
- "with": `aixds run --no-envoy` on a generated manifest directory and an Envoy bootstrapped by
  `aixds bootstrap`: router-phase ext_proc, route, upstream-phase ext_proc, as users run it;
- "without": a second Envoy whose static bootstrap is the first Envoy's own `/config_dump`
  (listeners, routes, clusters, endpoints) with the ext_proc HTTP filter and the clusters'
  upstream ext_proc filter removed and RDS/EDS inlined. Its routes are identical, every model's
  scope merged into one RouteConfiguration (nothing would move a request to its model's scope);
  the client sends the `x-ai-eg-model` header itself (it does on both sides; with the ext_proc
  the listener drops it and the router phase sets it from the body).

Models: `bench` (OpenAI backend: passthrough) and `bench-anthropic` (Anthropic backend: the
ext_proc translates OpenAI chat to Anthropic messages and back) on the direct-response upstream;
`bench-stream` and `bench-stream-anthropic` on upstream.py. Without the ext_proc nothing
translates, so the baseline of a translated scenario sends the Anthropic request straight to
`/v1/messages` (same upstream work, no translation).

Non-streaming: wrk (one thread, `-c` connections, `-d` seconds per run) with a Lua script that
POSTs the body and prints p50/p99 and requests/s; bodies of 1 KB and 32 KB (multi-turn chats).
Runs alternate between the two sides, the order flipping every round, so load from elsewhere
hits both alike; medians over the rounds are reported. Streaming: one keep-alive connection
per side, requests alternating side by side; time to first token is from sending the request
to receiving the first text delta ("Hello"), at the client.

Each wrk run also reads the CPU time (/proc/PID/stat) the gateway's processes used, per request:
aixds + its Envoy with the ext_proc, the other Envoy without. On a shared machine this moves
much less with other load than wall-clock latency does. The processes' idle CPU is printed first.
It reads the ext_proc messages per request from Envoy's own stats too (`stream_msgs_sent` of
every ext_proc filter, the listener's and the clusters').

With `--baseline-aixds OLD`, a third side ("before") runs the same manifests through another
aixds binary and its own Envoy, in the same rounds and order rotation: a change's before and
after, each against the same Envoy without the ext_proc, measured in one run.

Prints one JSON line per scenario and round, then a summary table. Every run is bounded in
time; every wait has a timeout.
"""

import argparse
import copy
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENVOY = os.path.join(ROOT, ".venv", "bin", "envoy")
UPSTREAM = os.path.join(ROOT, "e2e", "upstream.py")

CHAT_COMPLETION = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the bench upstream."},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 250, "completion_tokens": 7, "total_tokens": 257},
}
ANTHROPIC_MESSAGE = {
    "id": "msg_bench", "type": "message", "role": "assistant", "model": "bench-anthropic",
    "content": [{"type": "text", "text": "Hello from the bench upstream."}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 250, "output_tokens": 7},
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def request(port, method, path, body=None, headers=None, timeout=10):
    """(status, body bytes) of one request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def chat_body(size, model, stream=False):
    """An OpenAI chat request of about `size` bytes: a system prompt and alternating turns."""
    words = ("the quick brown fox jumps over the lazy dog while the gateway routes each "
             "request to its model and counts every token ").split()
    filler = " ".join(words[(i * 7) % len(words)] for i in range(size))
    messages = [{"role": "system", "content": "You are a concise assistant."}]
    body = {"model": model, "messages": messages, "max_tokens": 64, "stream": stream}
    turn = 0
    # Turns of ~480 characters while they fit, then a last user turn that fills up to `size`.
    while len(json.dumps(body)) + 600 < size:
        text = filler[turn * 13:turn * 13 + 480]
        messages.append({"role": "user" if turn % 2 == 0 else "assistant", "content": text})
        turn += 1
    messages.append({"role": "user", "content": ""})
    messages[-1]["content"] = filler[:size - len(json.dumps(body))]
    assert len(json.dumps(body)) == size, (len(json.dumps(body)), size)
    return body


def anthropic_body(chat):
    """The Anthropic request the ext_proc makes of `chat` (system prompt on top)."""
    system = [m["content"] for m in chat["messages"] if m["role"] == "system"]
    return {"model": chat["model"], "system": "\n".join(system), "max_tokens": chat["max_tokens"],
            "stream": chat["stream"],
            "messages": [m for m in chat["messages"] if m["role"] != "system"]}


def upstream_envoy_config(port, admin_port):
    def direct(prefix, obj):
        return {"match": {"prefix": prefix},
                "direct_response": {"status": 200, "body": {"inline_string": json.dumps(obj)}},
                "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}]}
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "upstream",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            direct("/v1/messages", ANTHROPIC_MESSAGE), direct("/", CHAT_COMPLETION)]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"listeners": [{
            "name": "upstream",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}],
        }]},
    }


def manifests(direct_port, stream_port):
    out = []
    for name, port in (("direct", direct_port), ("stream", stream_port)):
        for schema in ("OpenAI", "Anthropic"):
            backend = f"{name}-{schema.lower()}"
            out.append(f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: {backend}, namespace: default}}
spec:
  schema: {{name: {schema}}}
  backendRef: {{name: {name}, group: gateway.envoyproxy.io, kind: Backend}}
""")
        out.append(f"""---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: {name}, namespace: default}}
spec:
  endpoints: [{{ip: {{address: "127.0.0.1", port: {port}}}}}]
""")
    rules = "".join(f"""  - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {model}}}]}}]
    backendRefs: [{{name: {backend}}}]
""" for model, backend in (("bench", "direct-openai"), ("bench-anthropic", "direct-anthropic"),
                           ("bench-stream", "stream-openai"),
                           ("bench-stream-anthropic", "stream-anthropic")))
    out.append(f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: bench, namespace: default}}
spec:
  rules:
{rules}""")
    return "".join(out)


def without_ext_proc(dump, port, admin_port):
    """A static bootstrap of the resources in `dump` (Envoy's /config_dump?include_eds), minus
    the translation ext_proc, listening on `port`."""
    configs = {c["@type"].rsplit(".", 1)[-1]: c for c in dump["configs"]}
    # Each scope holds its RouteConfiguration; the default scope's is named as the scopes are.
    scopes = {s["name"]: s
              for d in configs["ScopedRoutesConfigDump"].get("dynamic_scoped_route_configs", [])
              for s in d["scoped_route_configs"]}
    endpoints = {e["endpoint_config"]["cluster_name"]: e["endpoint_config"]
                 for e in configs["EndpointsConfigDump"].get("dynamic_endpoint_configs", [])}

    def strip_type(message):
        message = copy.deepcopy(message)
        message.pop("@type", None)
        return message

    def no_ext_proc(filters):
        return [f for f in filters if f["name"] != "envoy.filters.http.ext_proc"]

    listeners = []
    for entry in configs["ListenersConfigDump"].get("dynamic_listeners", []):
        listener = strip_type(entry["active_state"]["listener"])
        listener["address"]["socket_address"]["port_value"] = port
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                hcm = f["typed_config"]
                hcm["http_filters"] = no_ext_proc(hcm["http_filters"])
                # Without the router phase nothing moves a request to its model's scope: one
                # RouteConfiguration with every model's routes, matched on the client's own
                # x-ai-eg-model (which the listener would otherwise drop).
                hcm.pop("early_header_mutation_extensions", None)
                default = hcm.pop("scoped_routes")["name"]
                config = strip_type(scopes[default]["route_configuration"])
                own = [r for name, scope in sorted(scopes.items())
                       if name.startswith(default + "/model/")
                       for r in scope["route_configuration"]["virtual_hosts"][0]["routes"]
                       if not r["name"].startswith(("not-found", "api-"))]
                config["virtual_hosts"][0]["routes"] = own + config["virtual_hosts"][0]["routes"]
                hcm["route_config"] = config
        listeners.append(listener)
    assert len(listeners) == 1, "the bench gateway has one listener"

    clusters = []
    for entry in configs["ClustersConfigDump"].get("dynamic_active_clusters", []):
        cluster = strip_type(entry["cluster"])
        if cluster.get("type") == "EDS":
            cluster["type"] = "STATIC"
            cluster.pop("eds_cluster_config")
            assignment = strip_type(endpoints[cluster["name"]])
            for locality in assignment.get("endpoints", []):
                # The dump prints an unset weight as 0, which a config may not say.
                if not locality.get("load_balancing_weight"):
                    locality.pop("load_balancing_weight", None)
            cluster["load_assignment"] = assignment
        for options in cluster.get("typed_extension_protocol_options", {}).values():
            filters = no_ext_proc(options.get("http_filters", []))
            # Only the codec left: the same HTTP/1 connection without an upstream filter chain.
            if [f["name"] for f in filters] == ["envoy.filters.http.upstream_codec"]:
                options.pop("http_filters")
        clusters.append(cluster)
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


class Procs:
    """Every process the benchmark starts, stopped at the end (by pid, in reverse order)."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []

    def start(self, name, argv, **kwargs):
        log = open(os.path.join(self.workdir, f"{name}.log"), "w")
        # stderr never into a pipe nobody reads: upstream.py logs every request there.
        proc = subprocess.Popen(argv, stdout=kwargs.pop("stdout", log), stderr=log, cwd=ROOT, **kwargs)
        self.procs.append((name, proc))
        return proc

    def envoy(self, name, config, admin_port):
        path = os.path.join(self.workdir, f"{name}.json")
        with open(path, "w") as f:
            json.dump(config, f)
        check = subprocess.run([ENVOY, "--mode", "validate", "-c", path], capture_output=True,
                               text=True, timeout=60)
        if check.returncode != 0:
            raise RuntimeError(f"{name}: Envoy rejects the config: {(check.stdout + check.stderr)[-2000:]}")
        return self.start(name, [ENVOY, "-c", path, "--concurrency", "1", "--disable-hot-restart",
                                 "-l", "warning"])

    def stop(self):
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def start_gateway(procs, name, aixds, mdir, workdir, clusters, extra=()):
    """`aixds run --no-envoy` on `mdir` (with `extra` arguments) and an Envoy bootstrapped by
    it, both called `name`, once Envoy has an endpoint for each of `clusters`; returns (listener
    port, Envoy admin port, aixds admin port, Envoy's config dump)."""
    xds_port, port, admin, aixds_admin = free_port(), free_port(), free_port(), free_port()
    procs.start(f"{name}-aixds", [aixds, "run", "--no-envoy", "--insecure-grpc", "--no-picker", mdir,
                                  "--xds-address", f"127.0.0.1:{xds_port}",
                                  "--admin-address", f"127.0.0.1:{aixds_admin}",
                                  "--listener-address", "127.0.0.1", "--default-port", str(port),
                                  *extra])
    wait_port(xds_port)
    boot = subprocess.run([aixds, "bootstrap", "--xds-address", f"127.0.0.1:{xds_port}",
                           "--envoy-admin-port", str(admin)],
                          capture_output=True, text=True, check=True, timeout=30).stdout
    boot_path = os.path.join(workdir, f"{name}-envoy.yaml")
    with open(boot_path, "w") as f:
        f.write(boot)
    procs.start(f"{name}-envoy", [ENVOY, "-c", boot_path, "--concurrency", "1",
                                  "--disable-hot-restart", "-l", "warning"])
    dump = wait_synced(admin, clusters)
    wait_port(port)
    return port, admin, aixds_admin, dump


def ext_proc_messages(admin_port):
    """The ext_proc messages an Envoy has sent, over all its ext_proc filters."""
    status, body = request(admin_port, "GET", "/stats?filter=ext_proc.*stream_msgs_sent")
    assert status == 200, status
    return sum(int(line.rsplit(": ", 1)[1]) for line in body.decode().splitlines() if ": " in line)


def config_dump(admin_port):
    status, body = request(admin_port, "GET", "/config_dump?include_eds")
    assert status == 200, status
    return json.loads(body)


def wait_synced(admin_port, clusters, timeout=30):
    """Until Envoy has the listener, the route and an endpoint for each of `clusters`."""
    wait_port(admin_port, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dump = config_dump(admin_port)
        configs = {c["@type"].rsplit(".", 1)[-1]: c for c in dump["configs"]}
        have = {e["endpoint_config"]["cluster_name"]
                for e in configs.get("EndpointsConfigDump", {}).get("dynamic_endpoint_configs", [])}
        ok = (configs.get("ListenersConfigDump", {}).get("dynamic_listeners")
              and configs.get("RoutesConfigDump", {}).get("dynamic_route_configs")
              and clusters <= have)
        if ok:
            return dump
        time.sleep(0.1)
    raise RuntimeError(f"Envoy did not get the config within {timeout}s")


WRK_SCRIPT = """
wrk.method = "POST"
wrk.path = "{path}"
wrk.headers["content-type"] = "application/json"
wrk.headers["x-ai-eg-model"] = "{model}"
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*a")
f:close()
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {{"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"mean_us":%.1f,"socket_errors":%d,"non_2xx":%d}}\\n', summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def wrk(port, script, connections, seconds):
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", script,
         f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=seconds + 30)
    line = next((l for l in out.stdout.splitlines() if l.startswith("WRK ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {out.stdout}{out.stderr}")
    result = json.loads(line[4:])
    if result["socket_errors"] or result["non_2xx"]:
        raise RuntimeError(f"wrk saw errors, the numbers would be meaningless: {result}")
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


class StreamClient:
    """One keep-alive HTTP/1.1 connection that POSTs streaming requests and times them."""

    def __init__(self, port):
        self.port = port
        self.connect()

    def connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def request(self, path, model, body):
        head = (f"POST {path} HTTP/1.1\r\nHost: bench\r\ncontent-type: application/json\r\n"
                f"x-ai-eg-model: {model}\r\ncontent-length: {len(body)}\r\n\r\n").encode()
        start = time.perf_counter()
        self.sock.sendall(head + body)
        buf = b""
        first = None
        while True:
            try:
                piece = self.sock.recv(65536)
            except TimeoutError:
                raise RuntimeError(f"no whole answer from port {self.port} in 30 s "
                                   f"({time.perf_counter() - start:.1f} s); got {buf[:600]!r}") from None
            if not piece:
                raise RuntimeError(f"connection closed mid-response: {buf[-500:]!r}")
            buf += piece
            if first is None and b"Hello" in buf:
                first = time.perf_counter()
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                continue
            if not buf.startswith(b"HTTP/1.1 200"):
                # An error answer (Envoy's own, with a length): the caller counts it.
                length = next((int(l.split(b":", 1)[1]) for l in buf[:head_end].split(b"\r\n")
                               if l.lower().startswith(b"content-length:")), None)
                if length is not None and len(buf) >= head_end + 4 + length:
                    print(f"streamed request failed: {buf[:300]!r}", file=sys.stderr)
                    self.sock.close()
                    self.connect()
                    return None
                continue
            if buf.endswith(b"\r\n0\r\n\r\n"):
                break
        end = time.perf_counter()
        if first is None:
            raise RuntimeError(f"unexpected streamed response: {buf[:800]!r}")
        return (first - start) * 1e6, (end - start) * 1e6

    def close(self):
        self.sock.close()


def median(values):
    return statistics.median(values) if values else float("nan")


def percentile(values, q):
    v = sorted(values)
    return v[max(0, min(len(v) - 1, int(round(q * len(v) + 0.5)) - 1))]


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU time of process `pid` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aixds", required=True, help="the aixds binary (a release build)")
    parser.add_argument("--baseline-aixds", help="another aixds binary, measured side by side as \"before\"")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4, help="length of one wrk run")
    parser.add_argument("--connections", default="1,8", help="wrk connections, comma-separated")
    parser.add_argument("--sizes", default="1024,32768", help="request body sizes in bytes")
    parser.add_argument("--stream-requests", type=int, default=300,
                        help="streamed requests per side per round")
    parser.add_argument("--only", choices=["wrk", "stream"], help="run one half only")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if shutil.which("wrk") is None and args.only != "stream":
        sys.exit("wrk is not installed (hack/bench-extproc.sh installs it)")

    workdir = tempfile.mkdtemp(prefix="aixds-bench-extproc-")
    procs = Procs(workdir)
    try:
        # The upstreams.
        direct_port, direct_admin = free_port(), free_port()
        procs.envoy("upstream-envoy", upstream_envoy_config(direct_port, direct_admin), direct_admin)
        stream_up = procs.start("upstream-py", [sys.executable, UPSTREAM, "--port", "0", "--id", "bench"],
                                stdout=subprocess.PIPE, text=True)
        line = stream_up.stdout.readline()
        assert line.startswith("listening on "), line
        stream_port = int(line.rsplit(":", 1)[1])
        wait_port(direct_port)

        # With the ext_proc: aixds + its Envoy (and the baseline binary's, when given).
        mdir = os.path.join(workdir, "manifests")
        os.mkdir(mdir)
        with open(os.path.join(mdir, "bench.yaml"), "w") as f:
            f.write(manifests(direct_port, stream_port))
        clusters = {f"aisb/default/{n}" for n in ("direct-openai", "direct-anthropic",
                                                    "stream-openai", "stream-anthropic")}
        with_port, with_admin, _, dump = start_gateway(procs, "with", args.aixds, mdir, workdir, clusters)
        gateways = {"with": with_admin}
        if args.baseline_aixds:
            before_port, before_admin, _, _ = start_gateway(procs, "before", args.baseline_aixds, mdir,
                                                            workdir, clusters)
            gateways["before"] = before_admin

        # Without: the same resources, statically, minus the ext_proc.
        without_port, without_admin = free_port(), free_port()
        procs.envoy("without-envoy", without_ext_proc(dump, without_port, without_admin), without_admin)
        wait_port(without_port)

        sides = {"with": with_port, "without": without_port}
        named = dict((name, p) for name, p in procs.procs)
        # Whose CPU time each side's requests cost: the gateway's processes and the upstream.
        cpu = {"with": {"aixds": named["with-aixds"], "envoy": named["with-envoy"],
                        "upstream": named["upstream-envoy"]},
               "without": {"envoy": named["without-envoy"], "upstream": named["upstream-envoy"]}}
        if args.baseline_aixds:
            sides["before"] = before_port
            cpu["before"] = {"aixds": named["before-aixds"], "envoy": named["before-envoy"],
                             "upstream": named["upstream-envoy"]}
        # Bodies and per-side requests: (path, model, body file) per scenario.
        scenarios = []
        for size in [int(s) for s in args.sizes.split(",")]:
            chat = chat_body(size, "bench")
            tr = chat_body(size, "bench-anthropic")
            for name, with_req, without_req in (
                    (f"openai→openai {size // 1024} KB", ("/v1/chat/completions", "bench", chat),
                     ("/v1/chat/completions", "bench", chat)),
                    (f"openai→anthropic {size // 1024} KB", ("/v1/chat/completions", "bench-anthropic", tr),
                     ("/v1/messages", "bench-anthropic", anthropic_body(tr)))):
                files = {}
                requests = [("without", without_req)] + [(side, with_req) for side in gateways]
                for side, (path, model, body) in requests:
                    body_path = os.path.join(workdir, f"body-{len(scenarios)}-{side}.json")
                    raw = json.dumps(body).encode()
                    with open(body_path, "wb") as f:
                        f.write(raw)
                    script = os.path.join(workdir, f"wrk-{len(scenarios)}-{side}.lua")
                    with open(script, "w") as f:
                        f.write(WRK_SCRIPT.format(path=path, model=model, body=body_path))
                    # Both sides answer 200 with the upstream's reply in the client's schema.
                    status, reply = request(sides[side], "POST", path, raw,
                                         {"content-type": "application/json", "x-ai-eg-model": model})
                    if status != 200:
                        raise RuntimeError(f"{name} {side}: {status} {reply[:300]!r}")
                    files[side] = script
                scenarios.append((name, len(json.dumps(with_req[2])), files))

        # CPU the processes use with no requests (xDS keep-alives, health checks, timers).
        idle = {name: cpu_seconds(p.pid) for name, p in procs.procs}
        time.sleep(3)
        idle = {name: round((cpu_seconds(p.pid) - idle[name]) / 3 * 1e3, 1) for name, p in procs.procs}
        print(json.dumps({"machine": {"nproc": os.cpu_count(), "load": loadavg()},
                          "idle_cpu_ms_per_s": idle,
                          "scenarios": [s[0] for s in scenarios]}), flush=True)
        results = {}
        conns = [int(c) for c in args.connections.split(",")]
        if args.only != "stream":
            for side, port in sides.items():  # warm-up, not recorded
                wrk(port, scenarios[0][2][side], conns[-1], 2)
            for rnd in range(args.rounds):
                order = list(sides)[rnd % len(sides):] + list(sides)[:rnd % len(sides)]
                for name, size, files in scenarios:
                    for c in conns:
                        for side in order:
                            load = loadavg()
                            before = {k: cpu_seconds(p.pid) for k, p in cpu[side].items()}
                            sent = ext_proc_messages(gateways[side]) if side in gateways else 0
                            r = wrk(sides[side], files[side], c, args.seconds)
                            for k, p in cpu[side].items():
                                used = cpu_seconds(p.pid) - before[k]
                                r[f"{k}_cpu_us_per_req"] = used * 1e6 / r["requests"]
                            if side in gateways:
                                sent = ext_proc_messages(gateways[side]) - sent
                                r["ext_proc_msgs_per_req"] = sent / r["requests"]
                            r["gateway_cpu_us_per_req"] = sum(
                                r[f"{k}_cpu_us_per_req"] for k in cpu[side] if k != "upstream")
                            r.update(round=rnd, scenario=name, connections=c, side=side, load=load)
                            print(json.dumps(r), flush=True)
                            results.setdefault((name, c, side), []).append(r)

        streams = {}
        if args.only != "wrk":
            clients = {side: StreamClient(port) for side, port in sides.items()}
            stream_scenarios = [
                ("stream openai→openai 1 KB",
                 ("/v1/chat/completions", "bench-stream", chat_body(1024, "bench-stream", True)),
                 ("/v1/chat/completions", "bench-stream", chat_body(1024, "bench-stream", True))),
                ("stream openai→anthropic 1 KB",
                 ("/v1/chat/completions", "bench-stream-anthropic",
                  chat_body(1024, "bench-stream-anthropic", True)),
                 ("/v1/messages", "bench-stream-anthropic",
                  anthropic_body(chat_body(1024, "bench-stream-anthropic", True)))),
            ]
            for name, with_req, without_req in stream_scenarios:
                reqs = {side: with_req if side in gateways else without_req for side in sides}
                raw = {side: json.dumps(body).encode() for side, (_, _, body) in reqs.items()}
                for side in sides:  # warm-up
                    for _ in range(20):
                        clients[side].request(reqs[side][0], reqs[side][1], raw[side])
                for rnd in range(args.rounds):
                    per_round = {side: [] for side in sides}
                    failed = {side: 0 for side in sides}
                    load = loadavg()
                    for i in range(args.stream_requests):
                        order = list(sides)[i % len(sides):] + list(sides)[:i % len(sides)]
                        for side in order:
                            sample = clients[side].request(reqs[side][0], reqs[side][1], raw[side])
                            if sample is None:
                                failed[side] += 1
                            else:
                                per_round[side].append(sample)
                    for side, samples in per_round.items():
                        ttft = [s[0] for s in samples]
                        total = [s[1] for s in samples]
                        r = {"round": rnd, "scenario": name, "side": side, "load": load,
                             "requests": len(samples), "failed": failed[side],
                             "ttft_p50_us": median(ttft),
                             "ttft_p99_us": percentile(ttft, 0.99), "total_p50_us": median(total)}
                        print(json.dumps(r), flush=True)
                        streams.setdefault((name, side), []).append(r)
            for c in clients.values():
                c.close()

        m = lambda rs, k: median([r[k] for r in rs])
        print("\nMedians over rounds (µs; req/s); × is against Envoy without the ext_proc:")
        print("| scenario | conns | side | p50 (×) | p99 | req/s (×) "
              "| gateway CPU per request (aixds + Envoy), added | ext_proc messages per request |")
        print("|---|---|---|---|---|---|---|---|")
        for name, _, _ in scenarios:
            for c in conns:
                wo = results.get((name, c, "without"))
                for side in gateways:
                    w = results.get((name, c, side))
                    if not w or not wo:
                        continue
                    print(f"| {name} | {c} | {side} | {m(w, 'p50_us'):.0f} "
                          f"(**{m(w, 'p50_us') / m(wo, 'p50_us'):.2f}×**) | {m(w, 'p99_us'):.0f} | "
                          f"{m(w, 'rps'):.0f} (**{m(w, 'rps') / m(wo, 'rps'):.2f}×**) | "
                          f"{m(w, 'gateway_cpu_us_per_req'):.0f} ({m(w, 'aixds_cpu_us_per_req'):.0f} + "
                          f"{m(w, 'envoy_cpu_us_per_req'):.0f}), "
                          f"+{m(w, 'gateway_cpu_us_per_req') - m(wo, 'gateway_cpu_us_per_req'):.0f} | "
                          f"{m(w, 'ext_proc_msgs_per_req'):.2f} |")
                if wo:
                    print(f"| {name} | {c} | without | {m(wo, 'p50_us'):.0f} | {m(wo, 'p99_us'):.0f} | "
                          f"{m(wo, 'rps'):.0f} | {m(wo, 'gateway_cpu_us_per_req'):.0f} (Envoy) | 0 |")
        if streams:
            print("\n| streaming scenario | side | TTFT p50 / added | TTFT p99 | whole stream p50 |")
            print("|---|---|---|---|---|")
            for name in dict.fromkeys(k[0] for k in streams):
                wo = streams[(name, "without")]
                for side in sides:
                    w = streams[(name, side)]
                    added = "" if side == "without" else \
                        f" / **{m(w, 'ttft_p50_us') - m(wo, 'ttft_p50_us'):+.0f}**"
                    print(f"| {name} | {side} | {m(w, 'ttft_p50_us'):.0f}{added} | "
                          f"{m(w, 'ttft_p99_us'):.0f} | {m(w, 'total_p50_us'):.0f} |")
    finally:
        procs.stop()
        if args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
