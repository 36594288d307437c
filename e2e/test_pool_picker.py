"""InferencePools with their endpoint picker, through the compiled config: aixds's reference
picker (on --picker-address, reached through the pool's endpointPickerRef Service) scrapes the
simulated model servers' vLLM metrics, and Envoy sends each request where the picker says.
Mirrors the Inference Extension's conformance cases that need no Kubernetes."""

import time

import anthropic
import openai
import pytest
import requests

from conftest import free_port, free_port_on
from test_modelserver import ModelServer
from test_pools import PODS, pods_yaml
from test_translation import MESSAGES


def manifests(port, picker_port, failure_mode="FailClose", service="llama-epp"):
    return pods_yaml() + f"""---
apiVersion: v1
kind: Service
metadata: {{name: llama-epp, namespace: default}}
spec: {{clusterIP: 127.0.0.1, ports: [{{port: {picker_port}}}]}}
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {{name: llama, namespace: default}}
spec:
  selector: {{matchLabels: {{app: llama}}}}
  targetPorts: [{{number: {port}}}]
  endpointPickerRef: {{name: {service}, port: {{number: {picker_port}}}, failureMode: {failure_mode}}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: llama-backend, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: llama, group: inference.networking.k8s.io, kind: InferencePool}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: pools, namespace: default}}
spec:
  rules:
  - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: llama-backend}}]}}]
    backendRefs: [{{name: llama-backend}}]
  - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: llama-direct}}]}}]
    backendRefs: [{{name: llama, group: inference.networking.k8s.io, kind: InferencePool}}]
"""


@pytest.fixture
def servers():
    port = free_port_on(*PODS)
    started = [ModelServer("--port", str(port), host=ip) for ip in PODS]
    yield port, started
    for s in started:
        s.stop()


def wait_until(check, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def set_waiting(server, n):
    requests.post(f"{server.url}/admin/waiting", json={"extra": n}, timeout=5).raise_for_status()


def served_by(gw, model, n=6, headers=None):
    """Which simulator served each of `n` Anthropic SDK requests, and the gateway's report."""
    client = anthropic.Anthropic(base_url=gw.base_url, api_key="k", max_retries=0,
                                 default_headers=headers)
    seen = []
    for _ in range(n):
        raw = client.messages.with_raw_response.create(model=model, max_tokens=16,
                                                       messages=MESSAGES)
        assert raw.parse().content[0].text
        seen.append((raw.headers["x-sim-endpoint"],
                     raw.headers.get("x-gateway-destination-endpoint-served")))
    return seen


@pytest.mark.parametrize("model", ["llama-backend", "llama-direct"])
def test_gateway_following_epp_routing(servers, gateway, model):
    port, (a, b) = servers
    picker_port = free_port()
    gw = gateway(manifests(port, picker_port), picker_port=picker_port)
    gw.wait_serving(model)
    set_waiting(a, 50)
    wait_until(lambda: {e for e, _ in served_by(gw, model, 3)} == {b.endpoint})
    seen = served_by(gw, model)
    assert {endpoint for endpoint, _ in seen} == {b.endpoint}, "the long queue gets nothing"
    assert {served for _, served in seen} == {b.endpoint}, "the served endpoint is reported"
    steer = served_by(gw, model, 3, headers={"x-gateway-destination-endpoint": a.endpoint})
    assert {endpoint for endpoint, _ in steer} == {b.endpoint}, "a client cannot steer"

    set_waiting(a, 0)
    set_waiting(b, 50)
    wait_until(lambda: {e for e, _ in served_by(gw, model, 3)} == {a.endpoint})
    assert gw.rejected_updates() == 0


def test_openai_sdk_streams_through_the_picker(servers, gateway):
    port, (a, b) = servers
    picker_port = free_port()
    gw = gateway(manifests(port, picker_port), picker_port=picker_port)
    gw.wait_serving("llama-backend")
    set_waiting(b, 50)
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="k", max_retries=0)
    wait_until(lambda: client.chat.completions.with_raw_response.create(
        model="llama-backend", messages=MESSAGES).headers["x-sim-endpoint"] == a.endpoint)
    with client.chat.completions.with_streaming_response.create(
            model="llama-backend", messages=MESSAGES, stream=True) as response:
        assert response.headers["x-sim-endpoint"] == a.endpoint
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text


@pytest.mark.parametrize("mode,ok", [("FailOpen", True), ("FailClose", False)])
def test_epp_unavailable(servers, gateway, mode, ok):
    """The pool's Service names a port where no picker listens."""
    port, _ = servers
    nothing_there = free_port()
    gw = gateway(manifests(port, nothing_there, failure_mode=mode))
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="k", max_retries=0)
    gw.wait_serving("llama-backend")
    if ok:
        reply = client.chat.completions.create(model="llama-backend", messages=MESSAGES)
        assert reply.choices[0].message.content
    else:
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="llama-backend", messages=MESSAGES)
    assert gw.rejected_updates() == 0


def test_a_missing_picker_service_fails_closed_and_says_why(servers, gateway):
    port, _ = servers
    picker_port = free_port()
    gw = gateway(manifests(port, picker_port, service="no-such-epp"), picker_port=picker_port)
    gw.wait_serving("llama-backend")
    r = requests.post(f"{gw.base_url}/v1/chat/completions",
                      json={"model": "llama-backend", "messages": MESSAGES}, timeout=10)
    assert r.status_code >= 500
    explained = requests.get(f"{gw.aixds_admin}/debug/explain",
                             params={"object": "InferencePool/default/llama"}, timeout=5).text
    assert "InvalidExtensionRef" in explained and "no-such-epp" in explained, explained
    assert gw.rejected_updates() == 0
