"""InferencePools through the gateway: a pool named by a route rule directly, and a pool behind
an AIServiceBackend, reached by both official SDKs. Anthropic requests are translated to OpenAI
before the pool's endpoint picker (the pool phase) and their responses translated back, plain
and streamed. Simulated model servers on 127.0.0.2 and 127.0.0.3 stand in for the pool's pods."""

import anthropic
import openai
import pytest

from conftest import free_port_on
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
