"""Cohere through the gateway, as the official SDKs see it: the openai SDK's chat (plain,
streamed, tools, structured output) and embeddings and the anthropic SDK's messages reach a
strict fake Cohere API v2 (e2e/providers/cohere.py) as Cohere chat and embed requests, and the
cohere SDK's rerank reaches it as it was sent. The gateway runs our own manifests for Cohere
(tests/fixtures/manifests/cohere) with the fake server's address in place of api.cohere.com."""

import base64
import json
import struct
import subprocess

import anthropic
import cohere
import openai
import pytest
import requests
from pydantic import BaseModel

from conftest import REPO, aixds_bin, free_port, openai_backend
from fakeserver import embedding_vector

COHERE_KEY = "co-e2e-secret"
MANIFEST = REPO / "tests" / "fixtures" / "manifests" / "cohere" / "cohere.yaml"
CHAT, EMBED, RERANK = "command-a-03-2025", "embed-v4.0", "rerank-v3.5"
MESSAGES = [{"role": "user", "content": "what is the weather like"}]
WEATHER_OPENAI = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
WEATHER_ANTHROPIC = [{"name": "get_weather", "description": "Weather in a city",
                      "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
# Models the example does not have, routed by a second route: failure knobs of the fake server,
# and a rerank model on a backend that is not Cohere's.
EXTRA_ROUTE = """---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: extra, namespace: default}
spec:
  parentRefs: [{name: cohere, kind: Gateway, group: gateway.networking.k8s.io}]
  rules:
  - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: command-fail-429}]}]
    backendRefs: [{name: cohere}]
  - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: command-finish-error}]}]
    backendRefs: [{name: cohere}]
  - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: rerank-fail-503}]}]
    backendRefs: [{name: cohere}]
  - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: rerank-on-openai}]}]
    backendRefs: [{name: not-cohere}]
"""


def example_for(server, port):
    """The example manifests, served on `port`, with the fake server for api.cohere.com (plain
    HTTP: its TLS policy left out) and the fake server's key."""
    documents = MANIFEST.read_text().split("\n---\n")
    kept = [d for d in documents if "kind: BackendTLSPolicy" not in d]
    assert len(kept) == len(documents) - 1
    text = "\n---\n".join(kept)
    replaced = (text.replace("port: 1975", f"port: {port}")
                .replace("YOUR_COHERE_API_KEY", COHERE_KEY)
                .replace("- fqdn:\n        hostname: api.cohere.com\n        port: 443",
                         f"- ip:\n        address: {server.host}\n        port: {server.port}"))
    assert replaced.count(str(server.port)) == 1 and COHERE_KEY in replaced, replaced
    return replaced + "\n"


@pytest.fixture
def gateway_to_cohere(providers, upstreams, gateway):
    server = providers("cohere", "cohere-a", "--api-key", COHERE_KEY)
    other = upstreams("openai-up")
    port = free_port()
    gw = gateway(example_for(server, port) + EXTRA_ROUTE + openai_backend("not-cohere", other),
                 port=port)
    gw.wait_serving(CHAT)
    return gw, server


def sent(server, path):
    """What the SDK calls delivered at `path` (wait_serving's probes carry no messages)."""
    return [r for r in server.recorded() if r["path"] == path and (r["body"] or {}).get("messages") != []]


def assert_clean(record):
    """The backend's key, and neither the client's key nor anything internal."""
    headers = record["headers"]
    assert headers["authorization"] == f"Bearer {COHERE_KEY}"
    assert "client-key" not in json.dumps(headers)
    assert not [h for h in headers if h.startswith("x-aixds-")], headers


def openai_client(gw):
    return openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="client-key", max_retries=0)


def anthropic_client(gw):
    return anthropic.Anthropic(base_url=gw.base_url, api_key="client-key", max_retries=0)


def test_the_cohere_example_validates():
    out = subprocess.run([aixds_bin(), "validate", str(MANIFEST)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "7 objects: 0 not accepted, 0 with unresolved references" in out.stdout, out.stdout


def test_openai_sdk_chat_plain_streamed_and_with_tools(gateway_to_cohere):
    gw, server = gateway_to_cohere
    client = openai_client(gw)
    reply = client.chat.completions.create(
        model=CHAT, messages=[{"role": "system", "content": "be brief"}] + MESSAGES,
        max_tokens=100, top_p=1, temperature=0.3, stop=["never"])
    assert reply.choices[0].message.content == "Hello from cohere-a"
    assert (reply.choices[0].finish_reason, reply.model) == ("stop", CHAT)
    # Cohere's billed tokens (the fake bills a word a token), not its template's.
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (7, 3)

    chunks = list(client.chat.completions.create(model=CHAT, messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "Hello from cohere-a"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert (chunks[-1].choices, chunks[-1].usage.prompt_tokens) == ([], 5)

    # A tool call, its result, and the answer after it: Cohere checks that every call is
    # answered, so the round trip (the tool plan as the assistant's words) must hold.
    first = client.chat.completions.create(model=CHAT, messages=MESSAGES, tools=WEATHER_OPENAI)
    message = first.choices[0].message
    call = message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    assert message.content == "I will call get_weather."
    answer = client.chat.completions.create(model=CHAT, tools=WEATHER_OPENAI, messages=[
        *MESSAGES, message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "21 degrees"}])
    assert answer.choices[0].message.content == "Hello from cohere-a"

    chunks = list(client.chat.completions.create(model=CHAT, messages=MESSAGES, stream=True,
                                                 tools=WEATHER_OPENAI, tool_choice="required"))
    arguments = "".join(tc.function.arguments or "" for c in chunks if c.choices
                        for tc in c.choices[0].delta.tool_calls or [])
    assert json.loads(arguments) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    records = sent(server, "/v2/chat")
    assert len(records) == 5
    assert records[0]["body"]["p"] == 0.99, "OpenAI's top_p 1 in Cohere's range"
    assert records[0]["body"]["messages"][0] == {"role": "system", "content": "be brief"}
    assert records[3]["body"]["messages"][1]["tool_plan"] == "I will call get_weather."
    assert records[4]["body"]["tool_choice"] == "REQUIRED"
    for r in records:
        assert_clean(r)
    assert COHERE_KEY not in gw.log_path.read_text(), "secrets never reach the logs"
    tokens = ('gen_ai_client_token_usage_sum{gen_ai_operation_name="chat",'
              f'gen_ai_provider_name="cohere",gen_ai_request_model="{CHAT}",gen_ai_token_type="input"}}')
    assert gw.metrics()[tokens] == 7 + 5 + 5 + 7 + 5


def test_openai_sdk_structured_output_from_cohere(gateway_to_cohere):
    """`response_format` reaches Cohere as its own JSON format, with the schema."""

    class Weather(BaseModel):
        city: str

    gw, server = gateway_to_cohere
    client = openai_client(gw)
    reply = client.chat.completions.parse(model=CHAT, messages=MESSAGES, response_format=Weather)
    assert reply.choices[0].message.parsed == Weather(city="Hello from cohere-a")
    with client.chat.completions.stream(model=CHAT, messages=MESSAGES,
                                        response_format=Weather) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.parsed == Weather(city="Hello from cohere-a")
    sent_format = sent(server, "/v2/chat")[-1]["body"]["response_format"]
    assert sent_format["type"] == "json_object"
    assert sent_format["json_schema"]["required"] == ["city"]


def floats32(values):
    """`values` as float32s, as base64 embeddings carry them."""
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


def test_openai_sdk_embeddings_from_cohere(gateway_to_cohere):
    gw, server = gateway_to_cohere
    client = openai_client(gw)
    # The SDK asks for base64 unless told otherwise, and decodes it.
    result = client.embeddings.create(model=EMBED, input=["hello world", "goodbye"])
    assert [e.index for e in result.data] == [0, 1]
    assert result.data[0].embedding == floats32(embedding_vector("hello world", 1024))
    assert (result.model, result.usage.prompt_tokens, result.usage.total_tokens) == (EMBED, 3, 3)

    result = client.embeddings.create(model=EMBED, input="hello", encoding_format="float",
                                      dimensions=256,
                                      extra_body={"input_type": "search_query"})
    assert result.data[0].embedding == pytest.approx(embedding_vector("hello", 256))

    records = sent(server, "/v2/embed")
    assert records[0]["body"] == {"model": EMBED, "input_type": "search_document",
                                  "texts": ["hello world", "goodbye"], "embedding_types": ["base64"]}
    assert records[1]["body"] == {"model": EMBED, "input_type": "search_query", "texts": ["hello"],
                                  "embedding_types": ["float"], "output_dimension": 256}
    for r in records:
        assert_clean(r)

    # Token ids cannot be embedded by Cohere: a typed 422, nothing sent.
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.embeddings.create(model=EMBED, input=[[1, 2, 3]])
    assert "token ids" in err.value.message
    assert len(sent(server, "/v2/embed")) == 2


def test_anthropic_sdk_messages_plain_streamed_and_with_tools(gateway_to_cohere):
    gw, server = gateway_to_cohere
    client = anthropic_client(gw)
    message = client.messages.create(model=CHAT, max_tokens=64, system="be brief",
                                     messages=MESSAGES)
    assert message.content[0].text == "Hello from cohere-a"
    assert (message.stop_reason, message.model) == ("end_turn", CHAT)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (7, 3)
    assert message.id.startswith("msg_")

    with client.messages.stream(model=CHAT, max_tokens=64, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from cohere-a"
    assert (final.stop_reason, final.usage.output_tokens) == ("end_turn", 3)

    message = client.messages.create(model=CHAT, max_tokens=64, messages=MESSAGES,
                                     tools=WEATHER_ANTHROPIC)
    assert message.stop_reason == "tool_use"
    assert [b.type for b in message.content] == ["text", "tool_use"]
    use = message.content[1]
    assert (use.name, use.input) == ("get_weather", {"city": "Paris"})
    answer = client.messages.create(model=CHAT, max_tokens=64, tools=WEATHER_ANTHROPIC, messages=[
        *MESSAGES, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21 degrees"}]}])
    assert answer.content[0].text == "Hello from cohere-a"

    with client.messages.stream(model=CHAT, max_tokens=64, messages=MESSAGES,
                                tools=WEATHER_ANTHROPIC) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[-1].input == {"city": "Paris"}

    records = sent(server, "/v2/chat")
    assert len(records) == 5
    assert records[0]["body"]["max_tokens"] == 64
    for r in records:
        assert_clean(r)


def test_cohere_errors_reach_each_sdk_as_its_typed_error(gateway_to_cohere):
    gw, _ = gateway_to_cohere
    message = "simulated failure 429 from cohere-a"
    with pytest.raises(openai.RateLimitError) as err:
        openai_client(gw).chat.completions.create(model="command-fail-429", messages=MESSAGES)
    assert err.value.message.endswith(message), err.value.message
    with pytest.raises(anthropic.RateLimitError) as err:
        anthropic_client(gw).messages.create(model="command-fail-429", max_tokens=8,
                                             messages=MESSAGES)
    assert err.value.body == {"type": "error", "error": {"type": "rate_limit_error", "message": message}}
    # What Cohere refuses (here a penalty out of its range, passed as given) comes back as its 400.
    with pytest.raises(openai.BadRequestError) as err:
        openai_client(gw).chat.completions.create(model=CHAT, messages=MESSAGES, presence_penalty=1.5)
    assert "presence_penalty" in err.value.message
    # An answer Cohere ends with finish_reason ERROR is an error the SDKs raise mid-stream.
    with pytest.raises(openai.APIError) as err:
        list(openai_client(gw).chat.completions.create(model="command-finish-error",
                                                       messages=MESSAGES, stream=True))
    assert "finish_reason ERROR" in err.value.message
    with pytest.raises(anthropic.APIStatusError) as err:
        with anthropic_client(gw).messages.stream(model="command-finish-error", max_tokens=8,
                                                  messages=MESSAGES) as stream:
            list(stream.text_stream)
    assert "finish_reason ERROR" in err.value.body["error"]["message"]


def test_cohere_sdk_rerank_through_the_gateway(gateway_to_cohere):
    gw, server = gateway_to_cohere
    client = cohere.ClientV2(base_url=f"{gw.base_url}/cohere", api_key="client-key",
                             max_retries=0, log_warning_experimental_features=False)
    documents = ["rain in london", "sunny weather in paris today", "paris museums"]
    ranked = client.rerank(model=RERANK, query="weather in paris", documents=documents, top_n=2)
    assert [r.index for r in ranked.results] == [1, 0]
    assert ranked.results[0].relevance_score == 1.0
    assert ranked.meta.billed_units.search_units == 1
    record = sent(server, "/v2/rerank")[-1]
    assert record["body"] == {"model": RERANK, "query": "weather in paris",
                              "documents": documents, "top_n": 2}
    assert_clean(record)
    # A rerank is billed in search units, counted as its input.
    metrics = gw.metrics()
    assert metrics['gen_ai_client_token_usage_sum{gen_ai_operation_name="rerank",'
                   f'gen_ai_provider_name="cohere",gen_ai_request_model="{RERANK}",'
                   'gen_ai_token_type="input"}'] == 1

    # Errors in Cohere's shape, which the SDK raises by status.
    with pytest.raises(cohere.BadRequestError) as err:
        client.rerank(model=RERANK, query="", documents=documents)
    assert "query" in err.value.body["message"]
    with pytest.raises(cohere.NotFoundError) as err:
        client.rerank(model="no-such-model", query="q", documents=documents)
    assert err.value.body == {"message": "No route matches the requested model."}
    with pytest.raises(cohere.UnprocessableEntityError) as err:
        client.rerank(model="rerank-on-openai", query="q", documents=documents)
    assert "Cohere rerank requests cannot be sent to a backend of schema OpenAI" in \
        err.value.body["message"]
    with pytest.raises(cohere.ServiceUnavailableError) as err:
        client.rerank(model="rerank-fail-503", query="q", documents=documents)
    assert err.value.body["message"] == "simulated failure 503 from cohere-a"
    r = requests.post(f"{gw.base_url}/cohere/v2/rerank", data="{oops", timeout=10)
    assert r.status_code == 400 and set(r.json()) == {"message"}

    # Cohere's model list names the routed models.
    models = requests.get(f"{gw.base_url}/cohere/v1/models", timeout=10).json()["models"]
    assert {CHAT, EMBED, RERANK} <= {m["name"] for m in models}
    assert [r.index for r in client.rerank(model=RERANK, query="paris", documents=documents).results] \
        == [1, 2, 0]


def test_base64_embeddings_pass_as_cohere_encodes_them(gateway_to_cohere):
    """The raw answer, without the SDK's decoding: base64 of little-endian float32s."""
    gw, _ = gateway_to_cohere
    r = requests.post(f"{gw.base_url}/v1/embeddings", timeout=10,
                      json={"model": EMBED, "input": "hi", "encoding_format": "base64"})
    data = r.json()["data"][0]["embedding"]
    assert isinstance(data, str)
    raw = base64.b64decode(data)
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == floats32(embedding_vector("hi", 1024))
