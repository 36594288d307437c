#!/usr/bin/env python3
"""Rate limit benchmark (issue 15): the latency a token budget's check adds to a request, with
the counters in memory and in Redis, against the same gateway's route without a policy.

Stdlib only; run it through hack/bench-ratelimit.sh, which builds the release binary and
installs wrk and redis-server first.

Processes, all on loopback, each Envoy with one worker (`--concurrency 1`): the direct-response
upstream Envoy of bench_extproc.py (an OpenAI chat completion with usage); a redis-server; two
`aixds run --no-envoy`, one counting in memory and one in that Redis, each with an Envoy
bootstrapped by `aixds bootstrap`. Both serve the same manifest: model `bench` without a policy
and model `bench-limited` with a BackendTrafficPolicy like Envoy AI Gateway's token example (per
`x-tenant-id`, checked before the request, charged the response's total tokens when it is done;
a limit too large to be reached). So a limited request costs two calls to the rate limit
service: the check, which the request waits for, and the charge, which it does not.

Scenarios, on each gateway: `bench` (no policy: the baseline) and `bench-limited`. wrk (one
thread, `-c` connections, `-d` seconds) POSTs a 1 KB chat body; runs alternate between the
scenarios, the order flipping every round; medians over the rounds are reported.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from bench_extproc import (WRK_SCRIPT, Procs, chat_body, free_port, request, start_gateway,
                           upstream_envoy_config, wait_port, wrk)

# bench_extproc's wrk script, each request from one tenant (the budget's Distinct selector).
WRK_SCRIPT = WRK_SCRIPT.replace(
    'wrk.headers["x-ai-eg-model"] = "{model}"\n',
    'wrk.headers["x-ai-eg-model"] = "{model}"\nwrk.headers["x-tenant-id"] = "bench-tenant"\n')
assert "x-tenant-id" in WRK_SCRIPT


def manifests(upstream_port):
    rules = "".join(f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: {name}, namespace: default}}
spec:
  llmRequestCosts: [{{metadataKey: llm_total_token, type: TotalToken}}]
  rules:
  - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {model}}}]}}]
    backendRefs: [{{name: upstream}}]
""" for name, model in (("free", "bench"), ("limited", "bench-limited")))
    return rules + f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: upstream, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: upstream, group: gateway.envoyproxy.io, kind: Backend}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: upstream, namespace: default}}
spec:
  endpoints: [{{ip: {{address: "127.0.0.1", port: {upstream_port}}}}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: budget, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: limited}}]
  rateLimit:
    type: Global
    global:
      rules:
      - clientSelectors: [{{headers: [{{name: x-tenant-id, type: Distinct}}]}}]
        limit: {{requests: 1000000000000, unit: Hour}}
        cost:
          request: {{from: Number, number: 0}}
          response: {{from: Metadata, metadata: {{namespace: io.envoy.ai_gateway, key: llm_total_token}}}}
"""


def gateway(procs, workdir, name, aixds, upstream_port, extra):
    mdir = os.path.join(workdir, f"manifests-{name}")
    os.mkdir(mdir)
    with open(os.path.join(mdir, "bench.yaml"), "w") as f:
        f.write(manifests(upstream_port))
    port, _, aixds_admin, _ = start_gateway(procs, name, aixds, mdir, workdir,
                                            {"aisb/default/upstream"}, extra)
    return port, aixds_admin


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aixds", required=True, help="the aixds binary (a release build)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4, help="length of one wrk run")
    parser.add_argument("--connections", default="1,16", help="wrk connections, comma-separated")
    args = parser.parse_args()
    for tool in ("wrk", "redis-server"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (hack/bench-ratelimit.sh installs it)")

    workdir = tempfile.mkdtemp(prefix="aixds-bench-ratelimit-")
    procs = Procs(workdir)
    try:
        upstream_port, upstream_admin = free_port(), free_port()
        procs.envoy("upstream-envoy", upstream_envoy_config(upstream_port, upstream_admin),
                    upstream_admin)
        redis_port = free_port()
        procs.start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", workdir])
        wait_port(upstream_port)
        wait_port(redis_port)
        memory = gateway(procs, workdir, "memory", args.aixds, upstream_port, [])
        redis = gateway(procs, workdir, "redis", args.aixds, upstream_port,
                        ["--ratelimit-redis", f"redis://127.0.0.1:{redis_port}"])

        body_path = os.path.join(workdir, "body.json")
        scripts = {}
        for model in ("bench", "bench-limited"):
            with open(body_path, "w") as f:
                json.dump(chat_body(1024, model), f)
            body_model = os.path.join(workdir, f"body-{model}.json")
            os.replace(body_path, body_model)
            script = os.path.join(workdir, f"wrk-{model}.lua")
            with open(script, "w") as f:
                f.write(WRK_SCRIPT.format(path="/v1/chat/completions", model=model, body=body_model))
            scripts[model] = script
        scenarios = {
            "no policy (memory gateway)": (memory[0], scripts["bench"]),
            "token budget, in memory": (memory[0], scripts["bench-limited"]),
            "no policy (Redis gateway)": (redis[0], scripts["bench"]),
            "token budget, Redis": (redis[0], scripts["bench-limited"]),
        }
        for name, (port, script) in scenarios.items():
            with open(script.replace(".lua", ".json").replace("wrk-", "body-")) as f:
                raw = f.read().encode()
            model = json.loads(raw)["model"]
            status, reply = request(port, "POST", "/v1/chat/completions", raw,
                                    {"content-type": "application/json", "x-ai-eg-model": model,
                                     "x-tenant-id": "bench-tenant"})
            if status != 200:
                raise RuntimeError(f"{name}: {status} {reply[:300]!r}")
            wrk(port, script, 16, 2)  # warm-up, not recorded
        print(json.dumps({"machine": {"nproc": os.cpu_count(), "load": os.getloadavg()}}),
              flush=True)
        conns = [int(c) for c in args.connections.split(",")]
        results = {}
        names = list(scenarios)
        for rnd in range(args.rounds):
            order = names if rnd % 2 == 0 else list(reversed(names))
            for c in conns:
                for name in order:
                    port, script = scenarios[name]
                    r = wrk(port, script, c, args.seconds)
                    r.update(round=rnd, scenario=name, connections=c)
                    print(json.dumps(r), flush=True)
                    results.setdefault((name, c), []).append(r)
        # The charges are fire-and-forget: check they were made (the budget counted tokens).
        for gw_name, (_, admin) in (("memory", memory), ("redis", redis)):
            status, text = request(admin, "GET", "/metrics")
            charged = [line for line in text.decode().splitlines()
                       if line.startswith("aixds_ratelimit_charged_total")]
            print(json.dumps({"gateway": gw_name, "charged": charged}), flush=True)

        print("\nMedians over rounds (µs; req/s):")
        print("| scenario | conns | p50 | p99 | req/s |")
        print("|---|---|---|---|---|")
        for name in names:
            for c in conns:
                rs = results[(name, c)]
                med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
                print(f"| {name} | {c} | {med('p50_us'):.0f} | {med('p99_us'):.0f} | "
                      f"{med('rps'):.0f} |")
    finally:
        procs.stop()
        time.sleep(0.1)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
