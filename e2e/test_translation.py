"""Translation through the gateway, as the official SDKs see it: a client speaks OpenAI or
Anthropic, the backend speaks whatever its AIServiceBackend says, and aixds translates both ways
and injects the backend's credential."""

import json

import anthropic
import httpx2
import openai
import pytest
import requests

from conftest import openai_backend, route

OPENAI_KEY = "sk-openai-secret-1"
ANTHROPIC_KEY = "sk-ant-secret-2"
MESSAGES = [{"role": "user", "content": "what is the weather like"}]
WEATHER_OPENAI = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
WEATHER_ANTHROPIC = [{"name": "get_weather", "description": "Weather in a city",
                      "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]


def credential(backend, policy_type, key):
    section = {"APIKey": "apiKey", "AnthropicAPIKey": "anthropicAPIKey"}[policy_type]
    return f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: {backend}-key, namespace: default}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {backend}}}]
  type: {policy_type}
  {section}: {{secretRef: {{name: {backend}-key}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: {backend}-key, namespace: default}}
stringData: {{apiKey: {key}}}
"""


@pytest.fixture
def two_schemas(upstreams, gateway):
    """Model `gpt` on an OpenAI-schema backend, model `claude` on an Anthropic-schema one."""
    oa, an = upstreams("openai-up"), upstreams("anthropic-up")
    failing = [f"{model}-{failure}" for model in ("gpt", "claude")
               for failure in ("fail-429", "fail-500", "cut", "cut-unframed")]
    gw = gateway(route([("gpt", "oa"), ("claude", "an")]
                       + [(m, "oa" if m.startswith("gpt") else "an") for m in failing])
                 + openai_backend("oa", oa) + credential("oa", "APIKey", OPENAI_KEY)
                 + openai_backend("an", an, schema="Anthropic")
                 + credential("an", "AnthropicAPIKey", ANTHROPIC_KEY))
    gw.wait_serving("gpt")
    return gw, oa, an


def sent(upstream):
    """What the SDK calls delivered upstream (wait_serving's probes carry no messages)."""
    return [r for r in upstream.recorded() if (r["body"] or {}).get("messages")]


def assert_clean(record, credential_header, key):
    headers = record["headers"]
    assert headers[credential_header] == (f"Bearer {key}" if credential_header == "authorization" else key)
    assert not [h for h in headers if h.startswith("x-aixds-")], headers


def test_openai_sdk_to_anthropic_backend(two_schemas):
    gw, _, an = two_schemas
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="client-key", max_retries=0)
    reply = client.chat.completions.create(
        model="claude", messages=[{"role": "system", "content": "be brief"}] + MESSAGES,
        max_tokens=100)
    assert reply.choices[0].message.content == "Hello from anthropic-up"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == 3

    chunks = list(client.chat.completions.create(model="claude", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "Hello from anthropic-up"

    reply = client.chat.completions.create(model="claude", messages=MESSAGES, tools=WEATHER_OPENAI)
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert (call.function.name, json.loads(call.function.arguments)) == \
        ("get_weather", {"city": "Paris"})

    records = sent(an)
    assert [r["path"] for r in records] == ["/v1/messages"] * 3
    first = records[0]
    assert first["body"]["system"] in ("be brief", [{"type": "text", "text": "be brief"}])
    assert first["body"]["max_tokens"] == 100
    assert records[2]["body"]["tools"][0]["input_schema"]["properties"]["city"]["type"] == "string"
    for r in records:
        assert_clean(r, "x-api-key", ANTHROPIC_KEY)
        assert "client-key" not in json.dumps(r["headers"])
    assert ANTHROPIC_KEY not in gw.log_path.read_text(), "secrets never reach the logs"


def test_anthropic_sdk_to_openai_backend(two_schemas):
    gw, oa, _ = two_schemas
    client = anthropic.Anthropic(base_url=gw.base_url, api_key="client-key", max_retries=0)
    message = client.messages.create(model="gpt", max_tokens=64, system="be brief",
                                     messages=MESSAGES)
    assert message.content[0].text == "Hello from openai-up"
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 3
    assert message.id.startswith("msg_"), "an Anthropic id, not the upstream's chatcmpl- one"

    with client.messages.stream(model="gpt", max_tokens=64, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
    assert text == "Hello from openai-up"

    message = client.messages.create(model="gpt", max_tokens=64, messages=MESSAGES,
                                     tools=WEATHER_ANTHROPIC)
    assert message.stop_reason == "tool_use"
    assert (message.content[0].name, message.content[0].input) == ("get_weather", {"city": "Paris"})

    records = sent(oa)
    assert [r["path"] for r in records] == ["/v1/chat/completions"] * 3
    assert records[0]["body"]["messages"][0] == {"role": "system", "content": "be brief"}
    assert records[2]["body"]["tools"][0]["function"]["name"] == "get_weather"
    for r in records:
        assert_clean(r, "authorization", OPENAI_KEY)


def test_same_schema_passes_through_with_the_credential(two_schemas):
    gw, oa, an = two_schemas
    oa_client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="client-key", max_retries=0)
    assert oa_client.chat.completions.create(model="gpt", messages=MESSAGES) \
        .choices[0].message.content == "Hello from openai-up"
    an_client = anthropic.Anthropic(base_url=gw.base_url, api_key="client-key", max_retries=0)
    assert an_client.messages.create(model="claude", max_tokens=8, messages=MESSAGES) \
        .content[0].text == "Hello from anthropic-up"
    assert_clean(sent(oa)[-1], "authorization", OPENAI_KEY)
    assert_clean(sent(an)[-1], "x-api-key", ANTHROPIC_KEY)


def test_bad_requests_get_errors_in_the_clients_format(two_schemas):
    gw, _, _ = two_schemas
    r = requests.post(f"{gw.base_url}/v1/chat/completions", data="{not json", timeout=10)
    assert r.status_code == 400 and "error" in r.json() and r.json()["error"]["message"]
    r = requests.post(f"{gw.base_url}/v1/messages", data="{not json", timeout=10)
    assert r.status_code == 400 and r.json()["type"] == "error"
    r = requests.post(f"{gw.base_url}/v1/chat/completions", json={"messages": MESSAGES}, timeout=10)
    assert r.status_code == 400 and "model" in r.json()["error"]["message"]

    oa_client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        oa_client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError):
        oa_client.chat.completions.create(model="claude-fail-429", messages=MESSAGES)
    an_client = anthropic.Anthropic(base_url=gw.base_url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.InternalServerError) as err:
        an_client.messages.create(model="gpt-fail-500", max_tokens=8, messages=MESSAGES)
    assert err.value.body["type"] == "error"

    # The gateway keeps serving after all of that.
    assert oa_client.chat.completions.create(model="gpt", messages=MESSAGES) \
        .choices[0].message.content == "Hello from openai-up"


def test_models_lists_the_configured_models(two_schemas):
    gw, _, _ = two_schemas
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="k", max_retries=0)
    ids = {m.id for m in client.models.list()}
    assert {"gpt", "claude"} <= ids


def test_upstream_errors_reach_both_sdks_in_their_own_format(two_schemas):
    gw, _, _ = two_schemas
    oa_client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="k", max_retries=0)
    an_client = anthropic.Anthropic(base_url=gw.base_url, api_key="k", max_retries=0)
    for model, upstream_id in (("gpt", "openai-up"), ("claude", "anthropic-up")):
        for status, oa_error, an_error, an_type in (
                (429, openai.RateLimitError, anthropic.RateLimitError, "rate_limit_error"),
                (500, openai.InternalServerError, anthropic.InternalServerError, "api_error")):
            name = f"{model}-fail-{status}"
            message = f"simulated failure {status} from {upstream_id}"
            for stream in (False, True):
                with pytest.raises(oa_error) as err:
                    list(oa_client.chat.completions.create(model=name, messages=MESSAGES,
                                                           stream=stream) if stream else
                         [oa_client.chat.completions.create(model=name, messages=MESSAGES)])
                assert err.value.status_code == status
                assert err.value.message.endswith(message), err.value.message
                with pytest.raises(an_error) as err:
                    list(an_client.messages.create(model=name, max_tokens=8, messages=MESSAGES,
                                                   stream=stream) if stream else
                         [an_client.messages.create(model=name, max_tokens=8, messages=MESSAGES)])
                assert err.value.status_code == status
                assert err.value.body == {"type": "error",
                                          "error": {"type": an_type, "message": message}}, \
                    err.value.body
    assert oa_client.chat.completions.create(model="claude", messages=MESSAGES) \
        .choices[0].message.content == "Hello from anthropic-up"


CUT_MESSAGE = "the upstream closed the stream before the response was complete"


@pytest.mark.parametrize("framing", ["chunked", "unframed"])
def test_upstream_closing_mid_stream_is_an_error_for_both_sdks(two_schemas, framing):
    """The upstream sends the start of a streamed answer and closes its connection. Chunked, the
    body is visibly incomplete and Envoy cuts the client's chunked body too; unframed, the body
    just ends, and the gateway adds an error event. Either way the SDK raises after the text that
    came, and never sees a finish reason or a stop."""
    gw, oa, an = two_schemas
    oa_client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="k", max_retries=0)
    an_client = anthropic.Anthropic(base_url=gw.base_url, api_key="k", max_retries=0)
    suffix = "cut" if framing == "chunked" else "cut-unframed"
    for model, upstream in (("gpt", oa), ("claude", an)):
        name = f"{model}-{suffix}"

        chunks = iter(oa_client.chat.completions.create(model=name, messages=MESSAGES,
                                                        stream=True))
        got = [next(chunks), next(chunks)]
        assert [(c.choices[0].delta.role, c.choices[0].delta.content) for c in got] == \
            [("assistant", ""), (None, "Hello")], (name, got)
        upstream.cut()
        if framing == "chunked":
            with pytest.raises(openai.APIConnectionError):
                got.extend(chunks)
        else:
            with pytest.raises(openai.APIError) as err:
                got.extend(chunks)
            assert type(err.value) is openai.APIError, name
            assert err.value.message == CUT_MESSAGE
            assert err.value.body == {"message": CUT_MESSAGE, "type": "server_error",
                                      "param": None, "code": None}
        assert len(got) == 2 and all(c.choices[0].finish_reason is None for c in got), (name, got)

        events = iter(an_client.messages.create(model=name, max_tokens=8, messages=MESSAGES,
                                                stream=True))
        got = [next(events), next(events), next(events)]
        assert [e.type for e in got] == ["message_start", "content_block_start",
                                         "content_block_delta"], (name, got)
        assert got[2].delta.text == "Hello"
        upstream.cut()
        if framing == "chunked":
            # The Anthropic SDK does not wrap transport errors met while iterating.
            with pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"):
                got.extend(events)
        else:
            with pytest.raises(anthropic.APIStatusError) as err:
                got.extend(events)
            assert err.value.body == {"type": "error",
                                      "error": {"type": "api_error", "message": CUT_MESSAGE}}
        assert len(got) == 3, (name, got)

    # The gateway keeps serving, on both schemas.
    assert oa_client.chat.completions.create(model="claude", messages=MESSAGES) \
        .choices[0].message.content == "Hello from anthropic-up"
    with an_client.messages.stream(model="gpt", max_tokens=8, messages=MESSAGES) as stream:
        assert "".join(stream.text_stream) == "Hello from openai-up"


def test_responses_api_passes_to_openai_backends_with_usage_counted(two_schemas):
    gw, oa, _ = two_schemas
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="client-key", max_retries=0)
    before = gw.metrics()
    reply = client.responses.create(model="gpt", input="what is the weather like")
    assert reply.output_text == "Hello from openai-up"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (5, 3)

    with client.responses.create(model="gpt", input="what is the weather like", stream=True) as stream:
        events = list(stream)
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == \
        "Hello from openai-up"
    assert events[-1].type == "response.completed"

    records = [r for r in oa.recorded() if r["path"] == "/v1/responses"]
    assert len(records) == 2
    # Passed as sent: the chat-only usage option would be refused by the Responses API.
    assert "stream_options" not in records[1]["body"]
    assert_clean(records[1], "authorization", OPENAI_KEY)
    after = gw.metrics()
    tokens = ('gen_ai_client_token_usage_sum{gen_ai_operation_name="chat",'
              'gen_ai_provider_name="openai",gen_ai_request_model="gpt",gen_ai_token_type="input"}')
    assert after[tokens] - before.get(tokens, 0) == 10, "both calls' input tokens are counted"

    # A backend of another family cannot serve it: a typed 4xx, nothing sent upstream.
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.responses.create(model="claude", input="hi")
    assert "OpenAI responses requests" in err.value.message


def test_anthropic_token_counting_and_model_list(two_schemas):
    gw, _, an = two_schemas
    client = anthropic.Anthropic(base_url=gw.base_url, api_key="client-key", max_retries=0)
    count = client.messages.count_tokens(model="claude", system="be brief", messages=MESSAGES)
    assert count.input_tokens == 7
    record = [r for r in an.recorded() if r["path"] == "/v1/messages/count_tokens"][-1]
    assert_clean(record, "x-api-key", ANTHROPIC_KEY)
    with pytest.raises(anthropic.UnprocessableEntityError) as err:
        client.messages.count_tokens(model="gpt", messages=MESSAGES)
    assert err.value.body["type"] == "error"

    # Anthropic's SDK lists models at OpenAI's path and gets its own format there.
    models = list(client.models.list())
    assert {"gpt", "claude"} <= {m.id for m in models}
    assert {m.type for m in models} == {"model"}
    assert client.models.retrieve("claude").display_name == "claude"
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("no-such-model")
    prefixed = requests.get(f"{gw.base_url}/anthropic/v1/models", timeout=10).json()
    assert prefixed["has_more"] is False and prefixed["data"][0]["type"] == "model"


def test_openai_structured_output_from_an_anthropic_backend(two_schemas):
    """`response_format` reaches Anthropic as a tool the model must call; the SDK parses the
    call's input as the JSON answer it asked for."""
    from pydantic import BaseModel

    class Weather(BaseModel):
        city: str

    gw, _, an = two_schemas
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="client-key", max_retries=0)
    reply = client.chat.completions.parse(model="claude", messages=MESSAGES, response_format=Weather)
    assert reply.choices[0].message.parsed == Weather(city="Paris")
    assert reply.choices[0].finish_reason == "stop"

    with client.chat.completions.stream(model="claude", messages=MESSAGES,
                                        response_format=Weather) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.parsed == Weather(city="Paris")

    sent_tools = sent(an)[-1]["body"]["tools"]
    assert [t["name"] for t in sent_tools] == ["aixds_json_response"]
    assert sent_tools[0]["input_schema"]["properties"]["city"]["type"] == "string"
