"""Replies Envoy makes itself, as the official SDKs see them: typed errors with the body parsed,
streaming or not, never a plain-text page the SDK cannot read."""

import anthropic
import openai
import pytest

from conftest import free_port, openai_backend, route

MESSAGES = [{"role": "user", "content": "hi"}]


class Down:
    """A backend address nothing listens on: Envoy's connection is refused."""
    host = "127.0.0.1"

    def __init__(self):
        self.port = free_port()


@pytest.fixture
def gateway_to_nowhere(upstreams, gateway):
    ok = upstreams("up-ok")
    gw = gateway(route([("ok", "ok"), ("down", "down")])
                 + openai_backend("ok", ok) + openai_backend("down", Down()))
    gw.wait_serving("ok")
    return gw


@pytest.mark.parametrize("stream", [False, True])
def test_openai_sdk_raises_a_typed_error_for_a_backend_that_is_down(gateway_to_nowhere, stream):
    client = openai.OpenAI(base_url=f"{gateway_to_nowhere.base_url}/v1", api_key="k",
                           max_retries=0)
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="down", messages=MESSAGES, stream=stream)
    assert err.value.status_code == 503
    assert err.value.response.headers["retry-after"] == "1"
    assert err.value.response.headers["content-type"] == "application/json"
    assert err.value.body["type"] == "server_error", err.value.body
    assert "upstream connect error" in err.value.body["message"]
    assert err.value.type == "server_error"


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_sdk_raises_a_typed_error_for_a_backend_that_is_down(gateway_to_nowhere, stream):
    client = anthropic.Anthropic(base_url=gateway_to_nowhere.base_url, api_key="k",
                                 max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as err:
        client.messages.create(model="down", max_tokens=5, messages=MESSAGES, stream=stream)
    assert isinstance(err.value, anthropic.InternalServerError)
    assert err.value.status_code == 503
    assert err.value.response.headers["retry-after"] == "1"
    assert err.value.body["type"] == "error", err.value.body
    assert err.value.body["error"]["type"] == "overloaded_error"
    assert "upstream connect error" in err.value.body["error"]["message"]


def test_sdks_raise_request_too_large_for_a_body_over_the_limit(upstreams, gateway):
    ok = upstreams("up-ok")
    gw = gateway(route([("ok", "ok")]) + openai_backend("ok", ok),
                 args=("--max-request-body", "1000"))
    gw.wait_serving("ok")
    big = [{"role": "user", "content": "x" * 2000}]
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="ok", messages=big)
    assert err.value.status_code == 413
    assert "limit of 1000 bytes" in err.value.body["message"]
    client = anthropic.Anthropic(base_url=gw.base_url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.RequestTooLargeError) as err:
        client.messages.create(model="ok", max_tokens=5, messages=big)
    assert err.value.body["error"]["type"] == "request_too_large"
