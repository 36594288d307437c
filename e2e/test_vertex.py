"""GCP Vertex AI through a real Envoy, as the official SDKs and Vertex see it: OpenAI and
Anthropic clients reach Gemini (schema GCPVertexAI, generateContent and streamGenerateContent)
and Anthropic models on rawPredict (schema GCPAnthropic) on the strict fake Vertex AI, which
checks bodies against the documented schemas and every request's bearer token against the
tokens its own OAuth2 endpoint issued for the service account's signed JWT (GCPCredentials)."""

import json
import struct

import anthropic
import openai
import pytest
import yaml
from pydantic import BaseModel

from conftest import REPO, free_port, openai_backend
from fakeserver import embedding_vector
from google_token import write_service_account

PROJECT, REGION = "aixds-e2e", "us-east5"
MESSAGES = [{"role": "user", "content": "what is the weather like"}]
WEATHER_OPENAI = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False}}}]
WEATHER_ANTHROPIC = [{"name": "get_weather", "description": "Weather in a city",
                      "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
VERTEX_PREFIX = f"/v1/projects/{PROJECT}/locations/{REGION}/publishers"


class Weather(BaseModel):
    city: str


def rule(model, backend):
    return f"""  - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: "{model}"}}]}}]
    backendRefs: [{{name: {backend}}}]
"""


def gcp_policy(backends, key_file):
    targets = ", ".join(f"{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {b}}}"
                        for b in backends)
    return f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: gcp, namespace: default}}
spec:
  targetRefs: [{targets}]
  type: GCPCredentials
  gcpCredentials: {{projectName: {PROJECT}, region: {REGION}, credentialsFile: {{secretRef: {{name: gcp-sa}}}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: gcp-sa, namespace: default}}
stringData: {{service_account.json: {json.dumps(key_file)}}}
"""


@pytest.fixture
def vertex(tmp_path, providers, gateway):
    port = free_port()
    key_path = tmp_path / "service_account.json"
    write_service_account(key_path, f"http://127.0.0.1:{port}/token", project_id=PROJECT)
    server = providers("vertex", "vertex-a", "--service-account", str(key_path),
                       "--project", PROJECT, "--location", REGION, port=port)
    rules = (rule("gemini-2.5-flash", "gemini") + rule("gemini-fail-429", "gemini")
             + rule("gemini-safety", "gemini")
             + rule("claude-sonnet-4", "claude") + rule("claude-fail-429", "claude")
             + rule("gemini-no-location", "gemini-no-policy")
             + rule("text-embedding-005", "gemini"))
    manifests = (f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: route, namespace: default}}
spec:
  rules:
{rules}"""
                 + openai_backend("gemini", server, schema="GCPVertexAI")
                 + openai_backend("claude", server, schema="GCPAnthropic")
                 + openai_backend("gemini-no-policy", server, schema="GCPVertexAI")
                 + gcp_policy(["gemini", "claude"], key_path.read_text()))
    gw = gateway(manifests)
    gw.wait_serving("gemini-2.5-flash")
    return gw, server


def calls(server, method):
    return [r for r in server.recorded() if r["path"].endswith(f":{method}")]


def openai_client(gw):
    return openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="client-key", max_retries=0)


def anthropic_client(gw):
    return anthropic.Anthropic(base_url=gw.base_url, api_key="client-key", max_retries=0)


def test_openai_sdk_on_gemini(vertex):
    gw, server = vertex
    client = openai_client(gw)
    reply = client.chat.completions.create(
        model="gemini-2.5-flash", messages=[{"role": "system", "content": "be brief"}] + MESSAGES,
        max_tokens=100)
    assert reply.choices[0].message.content == "Hello from vertex-a"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == 3 and reply.usage.prompt_tokens > 0

    chunks = list(client.chat.completions.create(model="gemini-2.5-flash", messages=MESSAGES,
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "Hello from vertex-a"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == 3

    # A function call and its result: Gemini wants the response named after the call.
    reply = client.chat.completions.create(model="gemini-2.5-flash", messages=MESSAGES,
                                           tools=WEATHER_OPENAI)
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    answered = client.chat.completions.create(model="gemini-2.5-flash", tools=WEATHER_OPENAI, messages=[
        *MESSAGES, reply.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert answered.choices[0].message.content == "Hello from vertex-a"

    # Structured output as Gemini's own response schema, whole and streamed.
    parsed = client.chat.completions.parse(model="gemini-2.5-flash", messages=MESSAGES,
                                           response_format=Weather)
    assert isinstance(parsed.choices[0].message.parsed, Weather)
    with client.chat.completions.stream(model="gemini-2.5-flash", messages=MESSAGES,
                                        response_format=Weather) as stream:
        final = stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, Weather)

    generated = calls(server, "generateContent")
    assert generated and all(r["path"] == f"{VERTEX_PREFIX}/google/models/gemini-2.5-flash:generateContent"
                             for r in generated)
    first = generated[0]["body"]
    assert first["systemInstruction"]["parts"] == [{"text": "be brief"}]
    assert first["generationConfig"]["maxOutputTokens"] == 100
    declared = generated[1]["body"]["tools"][0]["functionDeclarations"][0]
    assert "additionalProperties" not in json.dumps(declared), "Gemini's schema subset only"
    assert generated[-1]["body"]["generationConfig"]["responseMimeType"] == "application/json"
    streamed = calls(server, "streamGenerateContent")
    assert streamed and all(r["query"] == {"alt": "sse"} for r in streamed), streamed
    for r in generated + streamed:
        assert r["headers"]["authorization"].startswith("Bearer ")
        assert "client-key" not in json.dumps(r["headers"])


def test_anthropic_sdk_on_gemini_and_on_anthropic_models_of_vertex(vertex):
    gw, server = vertex
    client = anthropic_client(gw)
    for model in ("gemini-2.5-flash", "claude-sonnet-4"):
        message = client.messages.create(model=model, max_tokens=64, system="be brief",
                                         messages=MESSAGES)
        assert message.content[0].text == "Hello from vertex-a", model
        assert (message.stop_reason, message.usage.output_tokens) == ("end_turn", 3), model
        with client.messages.stream(model=model, max_tokens=64, messages=MESSAGES) as stream:
            assert "".join(stream.text_stream) == "Hello from vertex-a", model
            assert stream.get_final_message().stop_reason == "end_turn"
        message = client.messages.create(model=model, max_tokens=64, messages=MESSAGES,
                                         tools=WEATHER_ANTHROPIC)
        assert message.stop_reason == "tool_use", model
        use = next(b for b in message.content if b.type == "tool_use")
        assert (use.name, use.input) == ("get_weather", {"city": "Paris"})

    raw = calls(server, "rawPredict") + calls(server, "streamRawPredict")
    assert {r["path"].rsplit(":", 1)[0] for r in raw} == \
        {f"{VERTEX_PREFIX}/anthropic/models/claude-sonnet-4"}
    for r in raw:
        assert "model" not in r["body"]
        assert r["body"]["anthropic_version"] == "vertex-2023-10-16"
        assert "client-key" not in json.dumps(r["headers"])


def test_openai_sdk_on_anthropic_models_of_vertex(vertex):
    gw, _ = vertex
    client = openai_client(gw)
    reply = client.chat.completions.create(model="claude-sonnet-4", messages=MESSAGES)
    assert reply.choices[0].message.content == "Hello from vertex-a"
    chunks = list(client.chat.completions.create(model="claude-sonnet-4", messages=MESSAGES,
                                                 stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "Hello from vertex-a"


def test_vertex_errors_reach_each_sdk_as_its_typed_error(vertex):
    gw, _ = vertex
    for model in ("gemini-fail-429", "claude-fail-429"):
        with pytest.raises(openai.RateLimitError) as err:
            openai_client(gw).chat.completions.create(model=model, messages=MESSAGES)
        assert "simulated failure 429 from vertex-a" in err.value.message, model
        with pytest.raises(anthropic.RateLimitError) as err:
            anthropic_client(gw).messages.create(model=model, max_tokens=8, messages=MESSAGES)
        assert err.value.body["error"]["type"] == "rate_limit_error", model

    # A safety stop is a content filter finish, with no content.
    reply = openai_client(gw).chat.completions.create(model="gemini-safety", messages=MESSAGES)
    assert reply.choices[0].finish_reason == "content_filter"

    # A Vertex backend no GCPCredentials policy locates: a 503 that says so, nothing sent.
    with pytest.raises(openai.APIStatusError) as err:
        openai_client(gw).chat.completions.create(model="gemini-no-location", messages=MESSAGES)
    assert err.value.status_code == 503
    assert "GCPCredentials" in err.value.message


def test_gemini_is_refused_what_it_cannot_serve_in_the_clients_format(vertex):
    gw, server = vertex
    before = len(server.recorded())
    with pytest.raises(openai.UnprocessableEntityError):
        openai_client(gw).completions.create(model="gemini-2.5-flash", prompt="hi")
    with pytest.raises(anthropic.UnprocessableEntityError) as err:
        anthropic_client(gw).messages.count_tokens(model="gemini-2.5-flash", messages=MESSAGES)
    assert err.value.body["type"] == "error"
    assert len(server.recorded()) == before


def test_openai_sdk_embeddings_from_vertex(vertex):
    gw, server = vertex
    client = openai_client(gw)
    # The SDK asks for base64 unless told otherwise, and decodes it.
    result = client.embeddings.create(model="text-embedding-005", input=["hello world", "bye"],
                                      dimensions=64)
    for item, text in zip(result.data, ["hello world", "bye"]):
        want = embedding_vector(text, 64)
        assert item.embedding == list(struct.unpack("<64f", struct.pack("<64f", *want)))
    assert (result.model, result.usage.prompt_tokens) == ("text-embedding-005", 3)
    result = client.embeddings.create(model="text-embedding-005", input="hello",
                                      encoding_format="float",
                                      extra_body={"task_type": "RETRIEVAL_QUERY"})
    assert result.data[0].embedding == pytest.approx(embedding_vector("hello", 768))

    sent = calls(server, "predict")
    assert [r["body"] for r in sent] == [
        {"instances": [{"content": "hello world"}, {"content": "bye"}],
         "parameters": {"outputDimensionality": 64}},
        {"instances": [{"content": "hello", "task_type": "RETRIEVAL_QUERY"}]}]
    assert all(r["path"] == f"{VERTEX_PREFIX}/google/models/text-embedding-005:predict" for r in sent)


def test_the_gcp_manifest_set_runs_as_written(tmp_path, providers, gateway):
    """tests/fixtures/manifests/gcp as a user applies it, with only the fake's address in place of
    Vertex AI's and of Google's token endpoint (plain HTTP: the TLS policy left out) and the
    listener on a free port: the fake issues tokens for the set's own service account key and
    checks the set's project and region in every path."""
    text = (REPO / "tests/fixtures/manifests/gcp/vertex.yaml").read_text()
    secret = next(d for d in yaml.safe_load_all(text) if d and d["kind"] == "Secret")
    account = json.loads(secret["stringData"]["service_account.json"])
    port = free_port()
    account["token_uri"] = f"http://127.0.0.1:{port}/token"
    key_path = tmp_path / "set_account.json"
    key_path.write_text(json.dumps(account))
    server = providers("vertex", "vertex-a", "--service-account", str(key_path),
                       "--project", "my-project", "--location", "us-east5", port=port)
    listener = free_port()
    documents = [d for d in text.split("\n---\n") if "kind: BackendTLSPolicy" not in d]
    text = ("\n---\n".join(documents)
            .replace("port: 8080", f"port: {listener}")
            .replace("https://oauth2.googleapis.com/token", account["token_uri"])
            .replace("- fqdn:\n        hostname: us-east5-aiplatform.googleapis.com\n        port: 443",
                     f"- ip:\n        address: {server.host}\n        port: {server.port}"))
    assert f"port: {server.port}" in text and account["token_uri"] in text
    gw = gateway(text, port=listener)
    gw.wait_serving("gemini-2.5-flash")
    reply = openai_client(gw).chat.completions.create(model="gemini-2.5-flash", messages=MESSAGES)
    assert reply.choices[0].message.content == "Hello from vertex-a"
    message = anthropic_client(gw).messages.create(model="claude-sonnet", max_tokens=64,
                                                   messages=MESSAGES)
    assert message.content[0].text == "Hello from vertex-a"
    assert calls(server, "rawPredict")[-1]["path"] == \
        "/v1/projects/my-project/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict"
