"""How many ext_proc messages each kind of request costs (issue 16), read from aixds's own
`aixds_extproc_messages_total` counters, with the answer each SDK gets checked too: a change that
adds a message to a scenario fails here, not only in a benchmark."""

import base64
import json

import anthropic
import openai
import pytest
import requests

from conftest import openai_backend, route
from test_translation import ANTHROPIC_KEY, OPENAI_KEY, credential

MESSAGES = [{"role": "user", "content": "what is the weather like"}]


@pytest.fixture
def gw(upstreams, gateway):
    """`gpt` on an OpenAI backend, `claude` on an Anthropic one, `gpt-alias` on the OpenAI
    backend under another name (modelNameOverride), each with an API key policy."""
    oa, an = upstreams("openai-up"), upstreams("anthropic-up")
    alias = """  - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: gpt-alias}]}]
    backendRefs: [{name: oa, modelNameOverride: gpt}]
"""
    g = gateway(route([("gpt", "oa"), ("claude", "an"), ("gpt-fail-429", "oa")]) + alias
                + openai_backend("oa", oa) + credential("oa", "APIKey", OPENAI_KEY)
                + openai_backend("an", an, schema="Anthropic")
                + credential("an", "AnthropicAPIKey", ANTHROPIC_KEY))
    g.wait_serving("gpt")
    return g, oa, an


def messages_of(gw, call):
    """The ext_proc messages `call` made Envoy send, as {(phase, message): count}."""
    def counts():
        prefix = "aixds_extproc_messages_total{"
        return {tuple(v.split('"')[1] for v in k[len(prefix):-1].split(",")): n
                for k, n in gw.metrics().items() if k.startswith(prefix)}
    before = counts()
    result = call()
    after = counts()
    return result, {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def request_side(counts):
    """The request messages, which do not depend on how the upstream chunks its answer."""
    return {k: n for k, n in counts.items() if k[1].startswith("request_")}


ROUTER = {("router", "request_headers"): 1, ("router", "request_body"): 1}
PASSTHROUGH = {**ROUTER, ("upstream", "request_headers"): 1}
TRANSLATED = {**PASSTHROUGH, ("upstream", "request_body"): 1}


def answered(counts, headers, whole=False):
    """The response was read: its headers `headers` times (a passthrough skips them), its body
    in one message or more (`whole`: in exactly one)."""
    bodies = counts.get(("upstream", "response_body"), 0)
    return counts.get(("upstream", "response_headers"), 0) == headers \
        and (bodies == 1 if whole else bodies >= 1)


def observed(gw, model, error=None):
    """How many attempts for `model` the GenAI duration metric has counted (with `error`)."""
    suffix = f',error_type="{error}"' if error else ""
    return sum(v for k, v in gw.metrics().items()
               if k.startswith("gen_ai_server_request_duration_seconds_count{")
               and f'gen_ai_request_model="{model}"' in k and k.endswith(suffix + "}")
               and (error or "error_type" not in k))


def test_a_passthrough_request_never_sends_its_body_to_aixds(gw):
    g, oa, _ = gw
    client = openai.OpenAI(base_url=f"{g.base_url}/v1", api_key="client-key")
    tokens = lambda: sum(v for k, v in g.metrics().items()
                         if k.startswith("gen_ai_client_token_usage_sum{") and '"gpt"' in k)
    before = (observed(g, "gpt"), tokens())
    answer, counts = messages_of(g, lambda: client.chat.completions.create(
        model="gpt", messages=MESSAGES))
    assert answer.choices[0].message.content
    assert answer.usage.total_tokens > 0
    assert request_side(counts) == PASSTHROUGH, counts
    assert answered(counts, headers=0, whole=True), counts
    # Usage was still read from the body, and the attempt counted as a success.
    assert (observed(g, "gpt"), tokens()) == (before[0] + 1, before[1] + answer.usage.total_tokens)

    # An error passed through reaches the SDK as its typed error; its status came with the body.
    failed = observed(g, "gpt-fail-429", "429")
    client_no_retry = client.with_options(max_retries=0)
    with pytest.raises(openai.RateLimitError) as e:
        messages_of(g, lambda: client_no_retry.chat.completions.create(
            model="gpt-fail-429", messages=MESSAGES))
    assert e.value.status_code == 429 and e.value.body
    assert observed(g, "gpt-fail-429", "429") == failed + 1

    # The bytes the client sent are the bytes the backend got, with the backend's key.
    body = json.dumps({"model": "gpt", "messages": MESSAGES}, separators=(", ", ": ")).encode()
    (r, counts) = messages_of(g, lambda: requests.post(
        f"{g.base_url}/v1/chat/completions?trace=1", data=body,
        headers={"content-type": "application/json", "authorization": "Bearer client-key"},
        timeout=10))
    assert r.status_code == 200, r.text
    assert request_side(counts) == PASSTHROUGH, counts
    last = oa.recorded()[-1]
    assert base64.b64decode(last["raw"]) == body
    assert last["path"] == "/v1/chat/completions"
    assert last["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert not any(h.startswith("x-aixds-") for h in last["headers"])


def test_anthropic_to_anthropic_passes_through_streamed_or_not(gw):
    g, _, an = gw
    client = anthropic.Anthropic(base_url=g.base_url, api_key="client-key")
    answer, counts = messages_of(g, lambda: client.messages.create(
        model="claude", max_tokens=20, messages=MESSAGES))
    assert answer.content[0].text
    assert request_side(counts) == PASSTHROUGH, counts
    assert answered(counts, headers=0, whole=True), counts

    def stream():
        with client.messages.stream(model="claude", max_tokens=20, messages=MESSAGES) as s:
            return s.get_final_message()
    final, counts = messages_of(g, stream)
    assert final.content[0].text and final.usage.output_tokens > 0
    assert request_side(counts) == PASSTHROUGH, counts
    assert answered(counts, headers=0), counts
    assert an.recorded()[-1]["headers"]["x-api-key"] == ANTHROPIC_KEY


def test_requests_whose_body_changes_still_send_it(gw):
    g, oa, _ = gw
    client = openai.OpenAI(base_url=f"{g.base_url}/v1", api_key="client-key")
    # Another schema: translated.
    answer, counts = messages_of(g, lambda: client.chat.completions.create(
        model="claude", messages=MESSAGES))
    assert answer.choices[0].message.content
    assert request_side(counts) == TRANSLATED, counts
    assert answered(counts, headers=1), counts
    # A stream: the gateway asks the backend for usage.
    chunks, counts = messages_of(g, lambda: list(client.chat.completions.create(
        model="gpt", messages=MESSAGES, stream=True)))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert request_side(counts) == TRANSLATED, counts
    assert oa.recorded()[-1]["body"]["stream_options"] == {"include_usage": True}
    # A model override: the body names another model.
    answer, counts = messages_of(g, lambda: client.chat.completions.create(
        model="gpt-alias", messages=MESSAGES))
    assert answer.choices[0].message.content
    assert request_side(counts) == TRANSLATED, counts
    assert oa.recorded()[-1]["body"]["model"] == "gpt"


def test_a_body_naming_its_model_twice_is_refused_in_the_clients_format(gw):
    """Parsers disagree on which of two `model` fields counts; a body passed through reaches the
    backend as sent, so the gateway must not route on one while the backend serves the other."""
    g, oa, _ = gw
    sent = len(oa.recorded())
    body = b'{"model": "gpt", "messages": [], "model": "gpt-4o-secret"}'
    r = requests.post(f"{g.base_url}/v1/chat/completions", data=body,
                      headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "model" in r.json()["error"]["message"]
    # An escaped name is the same name.
    body = b'{"model": "claude", "max_tokens": 5, "messages": [], "stream": false, "str\\u0065am": true}'
    r = requests.post(f"{g.base_url}/v1/messages", data=body,
                      headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    assert len(oa.recorded()) == sent
