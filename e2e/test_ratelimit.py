"""Token budgets: Envoy Gateway BackendTrafficPolicies enforced by aixds's rate limit service, with
counters in memory or in a real Redis (Debian's redis-server on loopback), seen through the
official SDKs: a spent budget is a typed rate-limit error, other tenants and models go on, the
window rolling over lets traffic in again, and the SDKs' retries honour `retry-after`."""

import json
import shutil
import subprocess
import time
import uuid

import anthropic
import openai
import pytest
import requests

from conftest import REPO, Gateway, envoy_bin, free_port, openai_backend

MESSAGES = [{"role": "user", "content": "say hi"}]  # 2 prompt tokens + 3 completion tokens


def policy(rules, target="budget"):
    body = "".join(f"      - {r}\n" for r in rules)
    return f"""---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: tokens, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: {target}}}]
  rateLimit:
    type: Global
    global:
      rules:
{body}"""


def tenant_rule(model, limit, unit="Hour"):
    """Per tenant (x-tenant-id) on `model`: `limit` total tokens per `unit`, charged after each
    response, checked before each request, as Envoy AI Gateway's token example does."""
    return ("{clientSelectors: [{headers: [{name: x-tenant-id, type: Distinct}, "
            f"{{name: x-ai-eg-model, type: Exact, value: {model}}}]}}], "
            f"limit: {{requests: {limit}, unit: {unit}}}, "
            "cost: {request: {from: Number, number: 0}, "
            "response: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: total}}}}")


def manifests(upstream, rules=None):
    models = "".join(
        f"""  - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {m}}}]}}]
    backendRefs: [{{name: oa}}]
""" for m in ("gpt-budget", "gpt-large", "gpt-second"))
    return f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: budget, namespace: default}}
spec:
  llmRequestCosts: [{{metadataKey: total, type: TotalToken}}]
  rules:
{models}""" + openai_backend("oa", upstream) + (policy(rules) if rules else "")


RULES = [tenant_rule("gpt-budget", 10), tenant_rule("gpt-large", 1000),
         tenant_rule("gpt-second", 5, "Second")]


class Redis:
    """A redis-server on a loopback port, without persistence; stop() and start() again keep
    the port."""

    def __init__(self, tmp_path):
        self.port = free_port()
        self.dir = tmp_path
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                subprocess.run(["redis-cli", "-p", str(self.port), "ping"], check=True,
                               capture_output=True, timeout=2)
                return
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path)
    yield r
    r.stop()


def client(gw, tenant, retries=0):
    return openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="k", max_retries=retries,
                         default_headers={"x-tenant-id": tenant})


def chat(gw, tenant, model="gpt-budget", retries=0):
    return client(gw, tenant, retries).chat.completions.create(model=model, messages=MESSAGES)


def spend(gw, tenant, model="gpt-budget", most=10):
    """Sends requests until the budget refuses one: the error, after at least one success."""
    for sent in range(most):
        try:
            chat(gw, tenant, model)
        except openai.RateLimitError as e:
            assert sent >= 1, "the first request of a fresh budget is let in"
            return e
    raise AssertionError(f"{tenant} was never refused in {most} requests")


def serving(gateway, upstreams, args=()):
    gw = gateway(manifests(upstreams("oa"), RULES), args=list(args))
    gw.wait_serving("gpt-large")
    return gw


def test_a_tenant_spends_its_budget_and_others_go_on(upstreams, gateway):
    gw = serving(gateway, upstreams)
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    assert chat(gw, alice).usage.total_tokens == 5
    assert chat(gw, alice).usage.total_tokens == 5, "5 of 10 spent: let in"
    with pytest.raises(openai.RateLimitError) as refused:
        chat(gw, alice)
    e = refused.value
    assert e.status_code == 429
    assert e.body["type"] == "rate_limit_error", e.body
    assert int(e.response.headers["retry-after"]) >= 1
    assert e.response.headers["x-ratelimit-remaining"] == "0"
    assert e.response.headers["x-ratelimit-limit"].startswith("10, 10;w=3600")
    # Bob's budget on the same model, and Alice's on a model with a larger one, are untouched.
    assert chat(gw, bob).choices[0].message.content == "Hello from oa"
    assert chat(gw, alice, "gpt-large").usage.total_tokens == 5
    m = gw.metrics()
    bucket = 'bucket="BackendTrafficPolicy/default/tokens/0/default/budget/rule/0/match/0"'
    assert m[f'aixds_ratelimit_checks_total{{{bucket},result="limited"}}'] == 1
    assert m[f"aixds_ratelimit_charged_total{{{bucket}}}"] == 15
    # A request without the tenant header is not counted by a Distinct rule.
    anonymous = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="k", max_retries=0)
    for _ in range(3):
        anonymous.chat.completions.create(model="gpt-budget", messages=MESSAGES)


def test_anthropic_clients_and_streams_are_charged_their_usage(upstreams, gateway):
    gw = serving(gateway, upstreams)
    carol = str(uuid.uuid4())
    claude = anthropic.Anthropic(base_url=gw.base_url, api_key="k", max_retries=0,
                                 default_headers={"x-tenant-id": carol})
    message = claude.messages.create(model="gpt-budget", max_tokens=50, messages=MESSAGES)
    assert message.usage.input_tokens == 2
    with claude.messages.stream(model="gpt-budget", max_tokens=50, messages=MESSAGES) as s:
        assert s.get_final_text() == "Hello from oa"
    # 10 tokens charged, one plain and one streamed: the third is refused, in Anthropic's format.
    with pytest.raises(anthropic.RateLimitError) as refused:
        claude.messages.create(model="gpt-budget", max_tokens=50, messages=MESSAGES)
    assert refused.value.body["error"]["type"] == "rate_limit_error", refused.value.body
    # An OpenAI stream is charged the usage of its final chunk.
    dave = str(uuid.uuid4())
    stream = client(gw, dave).chat.completions.create(
        model="gpt-budget", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    assert [c.usage.total_tokens for c in stream if c.usage] == [5]
    chat(gw, dave)
    with pytest.raises(openai.RateLimitError):
        chat(gw, dave)


def test_the_window_rolling_over_lets_traffic_in_and_sdks_retry_after(upstreams, gateway):
    gw = serving(gateway, upstreams)
    erin = str(uuid.uuid4())
    refused = spend(gw, erin, "gpt-second")
    time.sleep(int(refused.response.headers["retry-after"]))
    assert chat(gw, erin, "gpt-second").usage.total_tokens == 5, "a new window"
    # With retries on, the SDK waits as retry-after says and gets through.
    frank = str(uuid.uuid4())
    before = gw.metrics()
    for _ in range(4):
        assert chat(gw, frank, "gpt-second", retries=3).usage.total_tokens == 5
    limited = ('aixds_ratelimit_checks_total{bucket="BackendTrafficPolicy/default/tokens/2/'
               'default/budget/rule/2/match/0",result="limited"}')
    assert gw.metrics().get(limited, 0) > before.get(limited, 0), "some attempts were refused"
    # The Anthropic SDK likewise.
    before = gw.metrics()
    claude = anthropic.Anthropic(base_url=gw.base_url, api_key="k", max_retries=3,
                                 default_headers={"x-tenant-id": str(uuid.uuid4())})
    for _ in range(4):
        m = claude.messages.create(model="gpt-second", max_tokens=50, messages=MESSAGES)
        assert m.usage.output_tokens == 3
    assert gw.metrics().get(limited, 0) > before.get(limited, 0), "some attempts were refused"


def test_two_replicas_on_one_redis_share_the_budget(upstreams, gateway, redis, tmp_path):
    args = ["--ratelimit-redis", redis.url]
    upstream = upstreams("oa")
    one = gateway(manifests(upstream, RULES), args=args)
    (tmp_path / "two").mkdir()
    two = Gateway(tmp_path / "two", manifests(upstream, RULES), free_port(), args)
    try:
        one.wait_serving("gpt-large")
        two.wait_serving("gpt-large")
        grace = str(uuid.uuid4())
        chat(one, grace)
        chat(two, grace)
        with pytest.raises(openai.RateLimitError):
            chat(one, grace)
        with pytest.raises(openai.RateLimitError):
            chat(two, grace)
        assert chat(two, str(uuid.uuid4())).usage.total_tokens == 5, "another tenant"
    finally:
        two.stop()


def test_redis_down_fails_open_without_waiting_and_recovers(upstreams, gateway, redis):
    gw = serving(gateway, upstreams, ["--ratelimit-redis", redis.url])
    heidi = str(uuid.uuid4())
    spend(gw, heidi)
    redis.stop()
    started = time.monotonic()
    for _ in range(3):
        assert chat(gw, heidi).usage.total_tokens == 5, "fail open"
    assert time.monotonic() - started < 3, "no request waited long on the dead Redis"
    assert gw.metrics()["aixds_ratelimit_failed_open_total"] >= 3
    redis.start()
    # An empty Redis: the budget counts from nothing again, and refuses once spent.
    deadline = time.monotonic() + 10
    while True:
        try:
            spend(gw, heidi)
            break
        except AssertionError:
            assert time.monotonic() < deadline, "traffic never counted again"


def test_fail_closed_refuses_in_the_clients_format_when_redis_is_down(upstreams, gateway, redis):
    gw = serving(gateway, upstreams, ["--ratelimit-redis", redis.url, "--ratelimit-fail-closed"])
    chat(gw, str(uuid.uuid4()))
    redis.stop()
    with pytest.raises(openai.APIStatusError) as refused:
        chat(gw, str(uuid.uuid4()))
    assert refused.value.status_code == 503
    assert refused.value.body["message"], "OpenAI's error format"
    assert gw.metrics()["aixds_ratelimit_failed_closed_total"] >= 1
    r = requests.get(f"{gw.base_url}/v1/models", timeout=5)
    assert r.status_code == 200, "requests no rule applies to are not refused"


def test_the_token_ratelimit_manifest_runs_as_written(upstreams, gateway):
    """tests/fixtures/manifests/token-ratelimit (Envoy AI Gateway's example's shape) with only
    the upstream's address and the listener's port changed: 10 input tokens per tenant an hour
    are 5 requests of 2, the sixth refused."""
    upstream = upstreams("oa")
    port = free_port()
    text = (REPO / "tests/fixtures/manifests/token-ratelimit/token-ratelimit.yaml").read_text()
    text = (text.replace("port: 8080", f"port: {port}")
            .replace("- fqdn:\n        hostname: token-budgets-upstream.default.svc.cluster.local\n"
                     "        port: 80",
                     f"- ip:\n        address: {upstream.host}\n        port: {upstream.port}"))
    assert str(upstream.port) in text
    gw = gateway(text, port=port)
    gw.wait_serving("budgeted-model")
    tenant = str(uuid.uuid4())
    for _ in range(5):
        assert chat(gw, tenant, "budgeted-model").usage.prompt_tokens == 2
    with pytest.raises(openai.RateLimitError):
        chat(gw, tenant, "budgeted-model")
    assert chat(gw, str(uuid.uuid4()), "budgeted-model").usage.prompt_tokens == 2
    # The CEL cost: a prompt of 3 tokens costs 100,000,000, past the 1,000 an hour at once.
    pricey = client(gw, str(uuid.uuid4()))
    three = [{"role": "user", "content": "one two three"}]
    assert pricey.chat.completions.create(model="budgeted-model", messages=three).usage.prompt_tokens == 3
    with pytest.raises(openai.RateLimitError):
        pricey.chat.completions.create(model="budgeted-model", messages=MESSAGES)


QUOTAS = """---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: quota, namespace: default}
spec:
  rules:
  - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: gpt-quota}]}]
    backendRefs: [{name: qb}]
  - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: gpt-free}]}]
    backendRefs: [{name: qb}]
  - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: gpt-alias}]}]
    backendRefs: [{name: qb, modelNameOverride: gpt-quota}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: QuotaPolicy
metadata: {name: qb-quota, namespace: default}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: qb}]
  perModelQuotas:
  - modelName: gpt-quota
    quota:
      costExpression: "output_tokens * 2u"
      defaultBucket: {limit: 30, duration: 1h}
      bucketRules:
      - clientSelectors: [{headers: [{name: x-tenant-id, type: Exact, value: small}]}]
        quota: {limit: 12, duration: 1h}
"""


def test_quota_policies_count_per_model_and_per_client_bucket(upstreams, gateway):
    """Envoy AI Gateway's QuotaPolicy: a CEL cost (3 output tokens → 6) charged to every bucket a
    request matches: tenant `small` has 12 of the model's 30; the default bucket is everyone's;
    a model without a quota on the same backend is not counted; a route whose backendRef
    overrides the model to the quota's model counts against it."""
    gw = gateway(QUOTAS + openai_backend("qb", upstreams("qb")))
    gw.wait_serving("gpt-quota")
    for _ in range(2):
        chat(gw, "small", "gpt-quota")
    with pytest.raises(openai.RateLimitError):
        chat(gw, "small", "gpt-quota")
    # The default bucket holds 18 of 30 (small's 12 and the readiness probe's 6): two more
    # requests from anyone, one through the alias that sends the quota's model, then refused.
    other = str(uuid.uuid4())
    chat(gw, other, "gpt-quota")
    chat(gw, other, "gpt-alias")
    for model in ("gpt-quota", "gpt-alias"):
        with pytest.raises(openai.RateLimitError):
            chat(gw, other, model)
    for _ in range(6):
        assert chat(gw, other, "gpt-free").usage.completion_tokens == 3, "no quota on gpt-free"
    m = gw.metrics()
    charged = 'aixds_ratelimit_charged_total{bucket="QuotaPolicy/default/qb-quota/model/0/default/default/qb"}'
    assert m[charged] == 30


def test_cel_request_costs_are_charged(upstreams, gateway):
    """An llmRequestCosts entry of type CEL (Envoy AI Gateway's example's expression shape)
    read by a BackendTrafficPolicy: 100 per request with 2 input tokens, so a budget of 150 lets
    two requests in and refuses the third."""
    manifest = f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: budget, namespace: default}}
spec:
  llmRequestCosts:
  - {{metadataKey: cel_cost, type: CEL, cel: "input_tokens == uint(2) ? 100 : 0"}}
  rules:
  - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: gpt-budget}}]}}]
    backendRefs: [{{name: oa}}]
""" + openai_backend("oa", upstreams("oa")) + policy([
        "{clientSelectors: [{headers: [{name: x-tenant-id, type: Distinct}]}], "
        "limit: {requests: 150, unit: Hour}, cost: {request: {from: Number, number: 0}, "
        "response: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: cel_cost}}}}"])
    gw = gateway(manifest)
    gw.wait_serving("gpt-budget")
    tenant = str(uuid.uuid4())
    chat(gw, tenant)
    chat(gw, tenant)
    with pytest.raises(openai.RateLimitError):
        chat(gw, tenant)


def test_envoy_survives_checks_and_charges_when_the_service_is_unreachable(upstreams, tmp_path):
    """Envoy with a route that has both a check before the request and a charge when the stream
    is done (as aixds compiles a token budget), and a rate limit service nobody listens on:
    every request is answered (fail open) and Envoy stays up. An Envoy advisory reports a crash
    in this combination on some versions; this pins the one the project ships."""
    upstream = upstreams("oa")
    port, admin, closed = free_port(), free_port(), free_port()
    entries = [{"generic_key": {"descriptor_key": "aixds.bucket", "descriptor_value": "b"}},
               {"generic_key": {"descriptor_key": "aixds.limit", "descriptor_value": "10/Hour"}}]
    per_route = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute",
        "rate_limits": [
            {"actions": entries, "hits_addend": {"number": 0}},
            {"actions": entries, "apply_on_stream_done": True,
             "hits_addend": {"format": "%BYTES_RECEIVED%"}},
        ]}
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "l", "address": {"socket_address": {
                "address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                 "http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "l",
                        "route_config": {"virtual_hosts": [{
                            "name": "all", "domains": ["*"], "routes": [{
                                "match": {"prefix": "/"}, "route": {"cluster": "up"},
                                "typed_per_filter_config": {
                                    "envoy.filters.http.ratelimit": per_route}}]}]},
                        "http_filters": [
                            {"name": "envoy.filters.http.ratelimit", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http."
                                         "ratelimit.v3.RateLimit",
                                "domain": "aixds", "timeout": "0.2s",
                                "rate_limit_service": {"transport_api_version": "V3",
                                                       "grpc_service": {"envoy_grpc": {
                                                           "cluster_name": "rls"}}}}},
                            {"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http."
                                         "router.v3.Router"}}]}}]}]}],
            "clusters": [
                {"name": "up", "connect_timeout": "1s", "type": "STATIC",
                 "load_assignment": {"cluster_name": "up", "endpoints": [{"lb_endpoints": [
                     {"endpoint": {"address": {"socket_address": {
                         "address": upstream.host, "port_value": upstream.port}}}}]}]}},
                {"name": "rls", "connect_timeout": "0.2s", "type": "STATIC",
                 "typed_extension_protocol_options": {
                     "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                         "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                                  "HttpProtocolOptions",
                         "explicit_http_config": {"http2_protocol_options": {}}}},
                 "load_assignment": {"cluster_name": "rls", "endpoints": [{"lb_endpoints": [
                     {"endpoint": {"address": {"socket_address": {
                         "address": "127.0.0.1", "port_value": closed}}}}]}]}}]}}
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(config))
    envoy = subprocess.Popen([envoy_bin(), "-c", str(path), "--concurrency", "1",
                              "--disable-hot-restart", "-l", "error"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"http://127.0.0.1:{admin}/ready", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "Envoy did not start"
                time.sleep(0.1)
        body = {"model": "m", "messages": MESSAGES}
        for _ in range(20):
            r = requests.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=5)
            assert r.status_code == 200, r.text
        time.sleep(0.5)  # the charges' calls fail after their requests
        assert envoy.poll() is None, "Envoy is still running"
        stats = requests.get(f"http://127.0.0.1:{admin}/stats?filter=ratelimit", timeout=5).text
        assert "failure_mode_allowed: 20" in stats, stats
    finally:
        envoy.kill()
        envoy.wait(timeout=10)


def test_local_limits_count_in_each_envoy_per_tenant(upstreams, gateway):
    """`type: Local`: a token bucket per tenant in the Envoy itself (no call to aixds), two
    requests a minute; the third gets 429 in the client's format with retry-after."""
    manifest = manifests(upstreams("oa")) + """---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: local, namespace: default}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: budget}]
  rateLimit:
    type: Local
    local:
      rules:
      - clientSelectors: [{headers: [{name: x-tenant-id, type: Distinct}]}]
        limit: {requests: 2, unit: Minute}
"""
    gw = gateway(manifest)
    gw.wait_serving("gpt-large")
    ivan, judy = str(uuid.uuid4()), str(uuid.uuid4())
    chat(gw, ivan, "gpt-large")
    chat(gw, ivan, "gpt-large")
    with pytest.raises(openai.RateLimitError) as refused:
        chat(gw, ivan, "gpt-large")
    assert refused.value.body["type"] == "rate_limit_error", refused.value.body
    assert int(refused.value.response.headers["retry-after"]) >= 1
    assert chat(gw, judy, "gpt-large").usage.total_tokens == 5, "another tenant's bucket"
    claude = anthropic.Anthropic(base_url=gw.base_url, api_key="k", max_retries=0,
                                 default_headers={"x-tenant-id": ivan})
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(model="gpt-large", max_tokens=50, messages=MESSAGES)


def test_a_client_cannot_pick_its_address_bucket_with_x_forwarded_for(upstreams, gateway):
    """A `sourceCIDR` Distinct budget counts per client address: the connection's, not what a
    client writes in X-Forwarded-For (Envoy is the edge; --xff-trusted-hops says otherwise)."""
    manifest = manifests(upstreams("oa"), [
        "{clientSelectors: [{sourceCIDR: {type: Distinct, value: 127.0.0.0/8}}], "
        "limit: {requests: 2, unit: Minute}}"])
    gw = gateway(manifest)
    gw.wait_serving("gpt-large")
    # The readiness probe spent one of the two: one more, then refused however it is forged.
    body = {"model": "gpt-large", "messages": MESSAGES}
    url = f"{gw.base_url}/v1/chat/completions"
    assert requests.post(url, json=body, headers={"x-forwarded-for": "10.0.0.1"}, timeout=5).status_code == 200
    for forged in ("10.0.0.2", "192.0.2.7", "127.0.0.9"):
        r = requests.post(url, json=body, headers={"x-forwarded-for": forged}, timeout=5)
        assert r.status_code == 429, (forged, r.status_code, r.text)
