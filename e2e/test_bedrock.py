"""AWS Bedrock through a real Envoy, as the official SDKs and Bedrock see it: OpenAI and
Anthropic clients reach Converse (schema AWSBedrock) and Anthropic models on InvokeModel (schema
AWSAnthropic) on the strict fake Bedrock, which recomputes every SigV4 signature with botocore's
signer and checks bodies against the documented schemas; a fallback from Bedrock to OpenAI
re-translates and signs (or not) per attempt."""

import json
import struct

import anthropic
import openai
import pytest
from pydantic import BaseModel

from conftest import REPO, free_port, openai_backend
from fakeserver import embedding_vector

ACCESS_KEY = "AKIDBEDROCKE2E"
SECRET_KEY = "bedrock/e2e+Secret0123456789abcdefghijkl"
REGION = "us-east-1"
OPENAI_KEY = "sk-openai-fallback"
MESSAGES = [{"role": "user", "content": "what is the weather like"}]
WEATHER_OPENAI = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
WEATHER_ANTHROPIC = [{"name": "get_weather", "description": "Weather in a city",
                      "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
CLAUDE_ID = "anthropic.claude-3-5-haiku-20241022-v1:0"
TITAN_ID = "amazon.titan-embed-text-v2:0"


class Weather(BaseModel):
    city: str


def rule(model, *refs):
    lines = "".join(f"    - {{{ref}}}\n" for ref in refs)
    return f"""  - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: "{model}"}}]}}]
    backendRefs:
{lines}"""


def policy(name, backends, secret_key):
    targets = ", ".join(f"{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {b}}}"
                        for b in backends)
    credentials = f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {secret_key}\n"
    return f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  targetRefs: [{targets}]
  type: AWSCredentials
  awsCredentials: {{region: {REGION}, credentialsFile: {{secretRef: {{name: {name}}}}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: default}}
stringData: {{credentials: {json.dumps(credentials)}}}
"""


@pytest.fixture
def bedrock(providers, upstreams, gateway):
    server = providers("bedrock", "bedrock-a", "--access-key-id", ACCESS_KEY,
                       "--secret-access-key", SECRET_KEY, "--region", REGION)
    oa = upstreams("openai-up")
    rules = (rule("nova", "name: converse")
             + rule("claude", f"name: invoke, modelNameOverride: \"{CLAUDE_ID}\"")
             + rule("nova-bad-key", "name: converse-bad-key")
             + rule("titan", f"name: converse, modelNameOverride: \"{TITAN_ID}\"")
             + rule("nova-fallback", 'name: converse, priority: 0, modelNameOverride: "us.amazon.nova-fail-503-v1:0"',
                    "name: oa, priority: 1, modelNameOverride: gpt-4o"))
    manifests = (f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: route, namespace: default}}
spec:
  rules:
{rules}"""
                 + openai_backend("converse", server, schema="AWSBedrock")
                 + openai_backend("invoke", server, schema="AWSAnthropic")
                 + openai_backend("converse-bad-key", server, schema="AWSBedrock")
                 + openai_backend("oa", oa)
                 + policy("aws", ["converse", "invoke"], SECRET_KEY)
                 + policy("aws-wrong", ["converse-bad-key"], "not-the-secret-key")
                 + f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: oa-key, namespace: default}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: oa}}]
  type: APIKey
  apiKey: {{secretRef: {{name: oa-key}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: oa-key, namespace: default}}
stringData: {{apiKey: {OPENAI_KEY}}}
""")
    gw = gateway(manifests)
    gw.wait_serving("nova")
    return gw, server, oa


def calls(server, kind):
    return [r for r in server.recorded() if r["path"].endswith(kind) and r.get("body")]


def test_openai_sdk_on_converse(bedrock):
    gw, server, _ = bedrock
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="client-key", max_retries=0)
    reply = client.chat.completions.create(
        model="nova", messages=[{"role": "system", "content": "be brief"}] + MESSAGES, max_tokens=100)
    assert reply.choices[0].message.content == "Hello from bedrock-a"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == 3 and reply.usage.prompt_tokens > 0

    chunks = list(client.chat.completions.create(model="nova", messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "Hello from bedrock-a"
    assert chunks[-1].usage.completion_tokens == 3

    reply = client.chat.completions.create(model="nova", messages=MESSAGES, tools=WEATHER_OPENAI)
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    answered = client.chat.completions.create(model="nova", tools=WEATHER_OPENAI, messages=MESSAGES + [
        reply.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert answered.choices[0].message.content == "Hello from bedrock-a"

    parsed = client.chat.completions.parse(model="nova", messages=MESSAGES, response_format=Weather)
    assert parsed.choices[0].message.parsed == Weather(city="Paris")

    sent = calls(server, "/converse") + calls(server, "/converse-stream")
    assert sent and all(r["path"].startswith("/model/nova/") for r in sent)
    first = next(r for r in calls(server, "/converse") if "system" in r["body"])
    assert first["body"]["system"] == [{"text": "be brief"}]
    assert first["body"]["inferenceConfig"]["maxTokens"] == 100
    headers = first["headers"]
    assert headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert "client-key" not in json.dumps(headers)
    assert SECRET_KEY not in gw.log_path.read_text()


def test_anthropic_sdk_on_converse_and_invoke_model(bedrock):
    gw, server, _ = bedrock
    client = anthropic.Anthropic(base_url=gw.base_url, api_key="client-key", max_retries=0)
    for model in ("nova", "claude"):
        message = client.messages.create(model=model, max_tokens=64, system="be brief",
                                         messages=MESSAGES)
        assert message.content[0].text == "Hello from bedrock-a", model
        assert message.stop_reason == "end_turn"
        assert message.usage.output_tokens == 3
        with client.messages.stream(model=model, max_tokens=64, messages=MESSAGES) as stream:
            assert "".join(stream.text_stream) == "Hello from bedrock-a", model
        message = client.messages.create(model=model, max_tokens=64, messages=MESSAGES,
                                         tools=WEATHER_ANTHROPIC)
        assert message.stop_reason == "tool_use", model
        block = next(b for b in message.content if b.type == "tool_use")
        assert (block.name, block.input) == ("get_weather", {"city": "Paris"})

    # A beta the client asks for in its header reaches InvokeModel in the body, where Bedrock
    # reads it.
    message = client.beta.messages.create(model="claude", max_tokens=64, messages=MESSAGES,
                                          betas=["token-efficient-tools-2025-02-19"])
    assert message.content[0].text == "Hello from bedrock-a"
    assert calls(server, "/invoke")[-1]["body"]["anthropic_beta"] == ["token-efficient-tools-2025-02-19"]

    # Token counting goes to CountTokens, for the InvokeModel body the request would be.
    counted = client.messages.count_tokens(model="claude", system="be brief", messages=MESSAGES)
    assert counted.input_tokens == 7
    assert calls(server, "/count-tokens")[-1]["path"] == \
        f"/model/{CLAUDE_ID.replace(':', '%3A')}/count-tokens"
    with pytest.raises(anthropic.UnprocessableEntityError):
        client.messages.count_tokens(model="nova", messages=MESSAGES)

    invoked = calls(server, "/invoke") + calls(server, "/invoke-with-response-stream")
    assert {r["path"].split("/")[2] for r in invoked} == {CLAUDE_ID.replace(":", "%3A")} or \
        {r["path"].split("/")[2] for r in invoked} == {CLAUDE_ID}
    for r in invoked:
        assert "model" not in r["body"] and "stream" not in r["body"]
        assert r["body"]["anthropic_version"] == "bedrock-2023-05-31"


def test_openai_sdk_on_anthropic_models_of_bedrock(bedrock):
    gw, _, _ = bedrock
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="client-key", max_retries=0)
    reply = client.chat.completions.create(model="claude", messages=MESSAGES)
    assert reply.choices[0].message.content == "Hello from bedrock-a"
    chunks = list(client.chat.completions.create(model="claude", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "Hello from bedrock-a"


def test_a_wrong_key_is_bedrocks_403_in_each_clients_format(bedrock):
    gw, _, _ = bedrock
    oa_client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        oa_client.chat.completions.create(model="nova-bad-key", messages=MESSAGES)
    an_client = anthropic.Anthropic(base_url=gw.base_url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as err:
        an_client.messages.create(model="nova-bad-key", max_tokens=8, messages=MESSAGES)
    assert err.value.body["type"] == "error"


def test_fallback_from_bedrock_to_openai_translates_and_signs_per_attempt(bedrock):
    gw, server, oa = bedrock
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="client-key", max_retries=0)
    reply = client.chat.completions.create(model="nova-fallback", messages=MESSAGES)
    assert reply.choices[0].message.content == "Hello from openai-up"
    failed = [r for r in server.recorded() if "nova-fail-503" in r["path"]]
    assert failed and failed[-1]["headers"]["authorization"].startswith("AWS4-HMAC-SHA256")
    served = [r for r in oa.recorded() if r["path"] == "/v1/chat/completions"][-1]
    assert served["body"]["model"] == "gpt-4o"
    assert served["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert not [h for h in served["headers"] if h.startswith("x-amz-")], served["headers"]


def test_openai_sdk_embeddings_from_titan(bedrock):
    gw, server, _ = bedrock
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="client-key", max_retries=0)
    # The SDK asks for base64 unless told otherwise, and decodes it.
    result = client.embeddings.create(model="titan", input="hello world", dimensions=256)
    want = embedding_vector("hello world", 256, True)
    assert result.data[0].embedding == list(struct.unpack("<256f", struct.pack("<256f", *want)))
    assert (result.model, result.usage.prompt_tokens) == (TITAN_ID, 2)
    result = client.embeddings.create(model="titan", input=["hello"], encoding_format="float")
    assert result.data[0].embedding == pytest.approx(embedding_vector("hello", 1024, True))

    sent = calls(server, "/invoke")
    titan = [r for r in sent if r["path"] == f"/model/{TITAN_ID.replace(':', '%3A')}/invoke"
             or r["path"] == f"/model/{TITAN_ID}/invoke"]
    assert [r["body"] for r in titan] == [{"inputText": "hello world", "dimensions": 256},
                                          {"inputText": "hello"}]
    assert all(r["headers"]["authorization"].startswith("AWS4-HMAC-SHA256") for r in titan)

    # Titan takes one text a request: several are the client's typed 422, nothing sent.
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.embeddings.create(model="titan", input=["a", "b"])
    assert "one text per request" in err.value.message
    assert len(calls(server, "/invoke")) == len(sent)


def test_the_aws_manifest_set_runs_as_written(providers, gateway):
    """tests/fixtures/manifests/aws as a user applies it, with only the fake's address in place of
    Bedrock's (plain HTTP: its TLS policy left out) and the listener on a free port: the fake
    checks signatures with the set's own (AWS's documented example) keys."""
    server = providers("bedrock", "bedrock-a", "--access-key-id", "AKIAIOSFODNN7EXAMPLE",
                       "--secret-access-key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                       "--region", "us-east-1")
    port = free_port()
    text = (REPO / "tests/fixtures/manifests/aws/bedrock.yaml").read_text()
    documents = [d for d in text.split("\n---\n") if "kind: BackendTLSPolicy" not in d]
    text = ("\n---\n".join(documents)
            .replace("port: 8080", f"port: {port}")
            .replace("- fqdn:\n        hostname: bedrock-runtime.us-east-1.amazonaws.com\n        port: 443",
                     f"- ip:\n        address: {server.host}\n        port: {server.port}"))
    assert str(server.port) in text
    gw = gateway(text, port=port)
    gw.wait_serving("us.amazon.nova-micro-v1:0")
    reply = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="k", max_retries=0) \
        .chat.completions.create(model="us.amazon.nova-micro-v1:0", messages=MESSAGES)
    assert reply.choices[0].message.content == "Hello from bedrock-a"
    message = anthropic.Anthropic(base_url=gw.base_url, api_key="k", max_retries=0) \
        .messages.create(model="claude-haiku", max_tokens=64, messages=MESSAGES)
    assert message.content[0].text == "Hello from bedrock-a"
    assert calls(server, "/invoke")[-1]["path"].startswith("/model/anthropic.claude-3-5-haiku")
