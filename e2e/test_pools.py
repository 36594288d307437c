"""InferencePools through the gateway: a pool named by a route rule directly, and a pool behind
an AIServiceBackend, reached by both official SDKs. Anthropic requests are translated to OpenAI
before the pool's endpoint picker (the pool phase) and their responses translated back, plain
and streamed. Simulated model servers on 127.0.0.2 and 127.0.0.3 stand in for the pool's pods."""

import json
import socket
import subprocess
import time

import anthropic
import openai
import pytest

from conftest import envoy_bin, free_port, free_port_on
from test_translation import MESSAGES

PODS = ["127.0.0.2", "127.0.0.3"]


def pods_yaml():
    """One ready Pod labelled app=llama per address in PODS."""
    return "".join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: llama-{i}, namespace: default, labels: {{app: llama}}}}
status: {{podIP: "{ip}", conditions: [{{type: Ready, status: "True"}}]}}
""" for i, ip in enumerate(PODS))


def pool_manifests(port):
    return pods_yaml() + f"""---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {{name: llama, namespace: default}}
spec:
  selector: {{matchLabels: {{app: llama}}}}
  targetPorts: [{{number: {port}}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: llama-backend, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: llama, group: inference.networking.k8s.io, kind: InferencePool}}
  headerMutation: {{set: [{{name: x-served-via, value: aiservicebackend}}]}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: pools, namespace: default}}
spec:
  rules:
  - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: llama-direct}}]}}]
    backendRefs: [{{name: llama, group: inference.networking.k8s.io, kind: InferencePool}}]
  - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: llama-backend}}]}}]
    backendRefs: [{{name: llama-backend}}]
  - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: llama-reset}}]}}]
    backendRefs: [{{name: llama, group: inference.networking.k8s.io, kind: InferencePool}}]
"""


@pytest.fixture
def pool(upstreams, gateway):
    port = free_port_on(*PODS)
    pods = [upstreams(f"pod-{ip}", host=ip, port=port) for ip in PODS]
    gw = gateway(pool_manifests(port))
    gw.wait_serving("llama-direct")
    gw.wait_serving("llama-backend")
    return gw, pods


def received(pods, model):
    return [r for p in pods for r in p.recorded()
            if (r["body"] or {}).get("model") == model and r["body"].get("messages")]


@pytest.mark.parametrize("model", ["llama-direct", "llama-backend"])
def test_anthropic_sdk_reaches_a_pool(pool, model):
    gw, pods = pool
    client = anthropic.Anthropic(base_url=gw.base_url, api_key="k", max_retries=0)
    message = client.messages.create(model=model, max_tokens=32, system="be brief",
                                     messages=MESSAGES)
    assert message.content[0].text.startswith("Hello from pod-127.0.0.")
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 3

    with client.messages.stream(model=model, max_tokens=32, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.startswith("Hello from pod-127.0.0.")
    assert final.usage.output_tokens == 3

    # The pods were sent OpenAI chat completions, translated from the Anthropic requests.
    records = received(pods, model)
    assert [r["path"] for r in records] == ["/v1/chat/completions"] * 2
    first = next(r for r in records if not r["body"].get("stream"))
    assert first["body"]["messages"][0] == {"role": "system", "content": "be brief"}
    assert first["body"]["max_completion_tokens"] == 32
    assert not [h for r in records for h in r["headers"] if h.startswith("x-aixds-")]
    via = {r["headers"].get("x-served-via") for r in records}
    assert via == ({"aiservicebackend"} if model == "llama-backend" else {None})


@pytest.mark.parametrize("model", ["llama-direct", "llama-backend"])
def test_openai_sdk_reaches_a_pool(pool, model):
    gw, pods = pool
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="k", max_retries=0)
    replies = [client.chat.completions.create(model=model, messages=MESSAGES) for _ in range(4)]
    assert all(r.choices[0].message.content.startswith("Hello from pod-") for r in replies)
    chunks = list(client.chat.completions.create(model=model, messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) \
        .startswith("Hello from pod-")
    assert {r["path"] for r in received(pods, model)} == {"/v1/chat/completions"}
    assert {p.id for p in pods if received([p], model)} == {f"pod-{ip}" for ip in PODS}, \
        "both pods serve"


def httproute_manifests(gateway_port, pod_port):
    """The Inference Extension's way: a Gateway API HTTPRoute sending everything to the pool."""
    return pods_yaml() + f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: aixds
  listeners: [{{name: http, protocol: HTTP, port: {gateway_port}}}]
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {{name: llama, namespace: default}}
spec:
  selector: {{matchLabels: {{app: llama}}}}
  targetPorts: [{{number: {pod_port}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: llama, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /}}}}]
    backendRefs: [{{group: inference.networking.k8s.io, kind: InferencePool, name: llama}}]
    timeouts: {{request: 60s}}
"""


def test_both_sdks_reach_a_pool_through_an_httproute(upstreams, gateway):
    """An HTTPRoute to the pool, as the Inference Extension's guides write it: OpenAI requests
    pass as they are; Anthropic ones are translated to OpenAI before the pool (the pool phase)
    and their answers back, plain and streamed."""
    port = free_port_on(*PODS)
    pods = [upstreams(f"pod-{ip}", host=ip, port=port) for ip in PODS]
    gateway_port = free_port()
    gw = gateway(httproute_manifests(gateway_port, port), port=gateway_port)
    gw.wait_serving("llama")

    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="k", max_retries=0)
    replies = [client.chat.completions.create(model="llama", messages=MESSAGES) for _ in range(4)]
    assert all(r.choices[0].message.content.startswith("Hello from pod-") for r in replies)
    chunks = list(client.chat.completions.create(model="llama", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) \
        .startswith("Hello from pod-")

    claude = anthropic.Anthropic(base_url=gw.base_url, api_key="k", max_retries=0)
    message = claude.messages.create(model="llama", max_tokens=32, system="be brief",
                                     messages=MESSAGES)
    assert message.content[0].text.startswith("Hello from pod-127.0.0.")
    assert message.stop_reason == "end_turn"
    with claude.messages.stream(model="llama", max_tokens=32, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.startswith("Hello from pod-127.0.0.")
    assert final.usage.output_tokens == 3

    records = received(pods, "llama")
    assert {r["path"] for r in records} == {"/v1/chat/completions"}
    translated = [r for r in records if r["body"]["messages"][0] == {"role": "system",
                                                                      "content": "be brief"}]
    assert translated and translated[0]["body"]["max_completion_tokens"] == 32
    assert not [h for r in records for h in r["headers"] if h.startswith("x-aixds-")]
    assert {p.id for p in pods if received([p], "llama")} == {f"pod-{ip}" for ip in PODS}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_pod_that_resets_is_a_typed_error_for_both_sdks(pool, stream):
    """A pod resets the connection (`reset` in the model name): Envoy's own 503 reaches each
    client in its format, the Anthropic one's too although the pool phase sent its request on as
    an OpenAI chat completion."""
    gw, _ = pool
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="llama-reset", messages=MESSAGES, stream=stream)
    assert err.value.status_code == 503
    assert err.value.type == "server_error", err.value.body
    client = anthropic.Anthropic(base_url=gw.base_url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.ServiceUnavailableError) as err:
        client.messages.create(model="llama-reset", max_tokens=5, messages=MESSAGES,
                               stream=stream)
    assert err.value.response.headers["content-type"] == "application/json"
    assert err.value.response.headers["retry-after"] == "1"
    assert err.value.body["type"] == "error", err.value.body
    assert err.value.type == "overloaded_error"


H2C_POD = "127.0.0.4"
H2C_ANSWER = {"id": "chatcmpl-h2c", "object": "chat.completion", "created": 1, "model": "h2c-model",
              "choices": [{"index": 0, "finish_reason": "stop",
                           "message": {"role": "assistant", "content": "served over h2c"}}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}}


def h2c_only_server(tmp_path, port):
    """A model server that speaks only HTTP/2 with prior knowledge (an Envoy with an HTTP/2
    codec and a fixed answer, naming the protocol it was asked in): an HTTP/1.1 request to it is
    a protocol error."""
    config = {"static_resources": {"listeners": [{
        "name": "pod", "address": {"socket_address": {"address": H2C_POD, "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "pod", "codec_type": "HTTP2",
                "route_config": {"virtual_hosts": [{"name": "pod", "domains": ["*"], "routes": [{
                    "match": {"prefix": "/"},
                    "direct_response": {"status": 200, "body": {"inline_string": json.dumps(H2C_ANSWER)}},
                    "response_headers_to_add": [
                        {"header": {"key": "x-pod-protocol", "value": "%PROTOCOL%"}},
                        {"header": {"key": "content-type", "value": "application/json"}}]}]}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}]}}
    path = tmp_path / "h2c-pod.json"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen([envoy_bin(), "-c", str(path), "--disable-hot-restart",
                             "--concurrency", "1", "--log-level", "error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((H2C_POD, port)) == 0:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the h2c model server did not start")


def h2c_manifests():
    pools = "".join(f"""---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{matchLabels: {{app: h2c}}}}
  targetPorts: [{{number: {{port}}}}]
{protocol}""" for name, protocol in (("h2c-pool", "  appProtocol: kubernetes.io/h2c\n"),
                                     ("http-pool", "")))
    return f"""---
apiVersion: v1
kind: Pod
metadata: {{name: h2c-0, namespace: default, labels: {{app: h2c}}}}
status: {{podIP: "{H2C_POD}", conditions: [{{type: Ready, status: "True"}}]}}
{pools}---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: h2c, namespace: default}}
spec:
  rules:
  - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: over-h2c}}]}}]
    backendRefs: [{{name: h2c-pool, group: inference.networking.k8s.io, kind: InferencePool}}]
  - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: over-http}}]}}]
    backendRefs: [{{name: http-pool, group: inference.networking.k8s.io, kind: InferencePool}}]
"""


def test_a_pool_of_app_protocol_h2c_is_reached_over_http2(tmp_path, gateway):
    """`appProtocol: kubernetes.io/h2c` (GIE's InferencePoolAppProtocol): the pool's model
    servers are spoken to in HTTP/2 with prior knowledge; the same server in a pool without it
    gets HTTP/1.1, which it cannot read."""
    port = free_port_on(H2C_POD)
    pod = h2c_only_server(tmp_path, port)
    try:
        gw = gateway(h2c_manifests().replace("{port}", str(port)))
        gw.wait_serving("over-h2c")
        client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="k", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="over-h2c", messages=MESSAGES)
        assert raw.headers["x-pod-protocol"] == "HTTP/2"
        assert raw.parse().choices[0].message.content == "served over h2c"
        message = anthropic.Anthropic(base_url=gw.base_url, api_key="k", max_retries=0) \
            .messages.create(model="over-h2c", max_tokens=16, messages=MESSAGES)
        assert message.content[0].text == "served over h2c"

        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="over-http", messages=MESSAGES)
        assert err.value.status_code in (502, 503), err.value
    finally:
        pod.kill()
        pod.wait()
