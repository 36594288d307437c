"""Fallback by priority: a rule's backendRefs with a higher `priority` value serve when those
before them answer 5xx or cannot be reached, and every attempt is translated for its own
backend's schema and carries only its own backend's credential."""

import json
import time

import anthropic
import openai
import pytest

from conftest import free_port, openai_backend
from test_translation import ANTHROPIC_KEY, MESSAGES, OPENAI_KEY, assert_clean, credential, sent


def fallback_route(model, primary, fallback, override):
    return f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: fallback-{primary}, namespace: default}}
spec:
  llmRequestCosts: [{{metadataKey: total, type: TotalToken}}]
  rules:
  - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: "{model}"}}]}}]
    backendRefs:
    - {{name: {primary}, priority: 0}}
    - {{name: {fallback}, priority: 1, modelNameOverride: {override}}}
"""


class Closed:
    """An address nothing listens on."""
    host = "127.0.0.1"

    def __init__(self):
        self.port = free_port()


@pytest.fixture
def fallback(upstreams, gateway):
    """`gpt-fail-503`: an OpenAI backend that answers 503, then an Anthropic one.
    `gpt-unreachable`: an OpenAI backend nobody listens on, then the same Anthropic one."""
    oa, an = upstreams("openai-up"), upstreams("anthropic-up")
    gw = gateway(fallback_route("gpt-fail-503", "oa", "an", "claude-ok")
                 + fallback_route("gpt-unreachable", "dead", "an", "claude-ok")
                 + openai_backend("oa", oa) + credential("oa", "APIKey", OPENAI_KEY)
                 + openai_backend("dead", Closed()) + credential("dead", "APIKey", OPENAI_KEY)
                 + openai_backend("an", an, schema="Anthropic")
                 + credential("an", "AnthropicAPIKey", ANTHROPIC_KEY))
    gw.wait_serving("gpt-unreachable")
    return gw, oa, an


def test_a_503_falls_back_to_the_other_schema(fallback):
    gw, oa, an = fallback
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="client-key", max_retries=0)
    reply = client.chat.completions.create(model="gpt-fail-503", messages=MESSAGES, max_tokens=50)
    assert reply.choices[0].message.content == "Hello from anthropic-up"
    assert reply.usage.completion_tokens == 3

    chunks = list(client.chat.completions.create(model="gpt-fail-503", messages=MESSAGES,
                                                 stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "Hello from anthropic-up"

    # The primary got each request in its own schema, with its own key...
    primary = [r for r in sent(oa) if r["body"]["model"] == "gpt-fail-503"]
    assert [r["path"] for r in primary] == ["/v1/chat/completions"] * 2
    for r in primary:
        assert_clean(r, "authorization", OPENAI_KEY)
    # ...and the fallback in Anthropic's, with the override and only the Anthropic key.
    second = [r for r in sent(an) if r["body"]["model"] == "claude-ok"]
    assert [r["path"] for r in second] == ["/v1/messages"] * 2
    assert second[0]["body"]["max_tokens"] == 50
    for r in second:
        assert_clean(r, "x-api-key", ANTHROPIC_KEY)
        assert "authorization" not in r["headers"], "the primary's key must not follow the retry"


def test_an_unreachable_primary_falls_back(fallback):
    gw, _, an = fallback
    client = anthropic.Anthropic(base_url=gw.base_url, api_key="client-key", max_retries=0)
    message = client.messages.create(model="gpt-unreachable", max_tokens=16, messages=MESSAGES)
    assert message.content[0].text == "Hello from anthropic-up"
    assert message.stop_reason == "end_turn"
    record = sent(an)[-1]
    assert record["body"]["model"] == "claude-ok"
    assert_clean(record, "x-api-key", ANTHROPIC_KEY)


def test_when_every_priority_fails_the_client_gets_the_last_error(upstreams, gateway):
    oa, an = upstreams("openai-up"), upstreams("anthropic-up")
    gw = gateway(fallback_route("gpt-fail-503", "oa", "an", "claude-fail-500")
                 + openai_backend("oa", oa) + openai_backend("an", an, schema="Anthropic"))
    gw.wait_serving("gpt-fail-503")
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="gpt-fail-503", messages=MESSAGES)
    assert err.value.status_code == 500
    assert "anthropic-up" in err.value.message, "the fallback's error, in OpenAI's format"


def test_the_access_log_shows_attempts_and_token_usage(upstreams, gateway, tmp_path):
    """Usage reaches Envoy's dynamic metadata under the route's llmRequestCosts keys: the
    access log (`--access-log`) prints it next to the attempts a fallback took."""
    oa, an = upstreams("openai-up"), upstreams("anthropic-up")
    log = tmp_path / "access.log"
    gw = gateway(fallback_route("gpt-fail-503", "oa", "an", "claude-ok")
                 + openai_backend("oa", oa) + openai_backend("an", an, schema="Anthropic"),
                 args=["--access-log", str(log)])
    gw.wait_serving("gpt-fail-503")
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="k", max_retries=0)
    reply = client.chat.completions.create(model="gpt-fail-503", messages=MESSAGES,
                                           extra_headers={"x-request-id": "usage-check"})
    deadline = time.monotonic() + 10
    line = None
    while line is None and time.monotonic() < deadline:
        lines = [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []
        line = next((l for l in lines if l["request_id"] == "usage-check"), None)
        time.sleep(0.1)
    assert line is not None, "Envoy logged the request"
    assert line["status"] == 200
    assert line["model"] == "gpt-fail-503"
    assert line["cluster"] == "rule/default/fallback-oa/0"
    assert line["attempts"] == 2
    assert line["upstream_host"] == f"{an.host}:{an.port}"
    assert line["usage"] == {"total": reply.usage.total_tokens}


def test_genai_metrics_count_each_attempt(fallback):
    gw, _, _ = fallback
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="k", max_retries=0)
    before = gw.metrics()  # the fixture's readiness probes went through too
    reply = client.chat.completions.create(model="gpt-fail-503", messages=MESSAGES)
    list(client.chat.completions.create(model="gpt-fail-503", messages=MESSAGES, stream=True))
    after = gw.metrics()
    m = {k: v - before.get(k, 0) for k, v in after.items()}
    primary = ('gen_ai_operation_name="chat",gen_ai_provider_name="openai",'
               'gen_ai_request_model="gpt-fail-503"')
    served = ('gen_ai_operation_name="chat",gen_ai_provider_name="anthropic",'
              'gen_ai_request_model="claude-ok"')
    assert m[f'gen_ai_server_request_duration_seconds_count{{{primary},error_type="503"}}'] == 2
    assert m[f"gen_ai_server_request_duration_seconds_count{{{served}}}"] == 2
    input_tokens = f'gen_ai_client_token_usage_sum{{{served},gen_ai_token_type="input"}}'
    output_tokens = f'gen_ai_client_token_usage_sum{{{served},gen_ai_token_type="output"}}'
    assert m[input_tokens] == 2 * reply.usage.prompt_tokens
    assert m[output_tokens] == 2 * reply.usage.completion_tokens
    assert m[f"gen_ai_server_time_to_first_token_seconds_count{{{served}}}"] == 1, "streamed once"
