"""The gateway as a user runs it: `aixds run` + Envoy, driven by the official OpenAI SDK."""

import openai
import pytest
import requests

from conftest import openai_backend, route


def test_openai_sdk_reaches_the_upstream_of_its_model(upstreams, gateway):
    a, b = upstreams("up-a"), upstreams("up-b")
    gw = gateway(route([("model-a", "a"), ("model-b", "b")])
                 + openai_backend("a", a) + openai_backend("b", b))
    gw.wait_serving("model-a")
    for model, expected in [("model-a", "up-a"), ("model-b", "up-b")]:
        client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="sk-test", max_retries=0,
                               default_headers={"x-ai-eg-model": model})
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hello there"}])
        assert reply.choices[0].message.content == f"Hello from {expected}"
        assert reply.model == model
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

        chunks = list(client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hello"}], stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == f"Hello from {expected}"
    # What the SDK sent (wait_serving's probes have no messages) arrived unchanged.
    sent = [r for r in a.recorded() if r["body"]["messages"]]
    assert [r["path"] for r in sent] == ["/v1/chat/completions"] * 2
    assert sent[0]["headers"]["authorization"] == "Bearer sk-test"
    assert sent[1]["body"]["stream"] is True
    assert gw.rejected_updates() == 0


def test_unknown_model_is_an_openai_404(upstreams, gateway):
    a = upstreams("up-a")
    gw = gateway(route([("model-a", "a")]) + openai_backend("a", a))
    gw.wait_serving("model-a")
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="sk-test", max_retries=0,
                           default_headers={"x-ai-eg-model": "nope"})
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "model_not_found"


def test_editing_the_manifest_moves_a_model(upstreams, gateway):
    a, b = upstreams("up-a"), upstreams("up-b")
    gw = gateway(route([("m", "a")]) + openai_backend("a", a) + openai_backend("b", b))
    gw.wait_serving("m")
    gw.write(route([("m", "b")]) + openai_backend("a", a) + openai_backend("b", b))
    for _ in range(200):
        r = requests.post(f"{gw.base_url}/v1/chat/completions", headers={"x-ai-eg-model": "m"},
                          json={"model": "m", "messages": []}, timeout=5)
        if r.headers.get("x-upstream-id") == "up-b":
            break
    else:
        raise AssertionError("model m never moved to up-b")
