"""Proves e2e/upstream.py is wire-correct by driving it with the official OpenAI and Anthropic SDKs."""

import json
import select
import subprocess
import sys
from pathlib import Path

import anthropic
import openai
import pytest
import requests

UPSTREAM = Path(__file__).with_name("upstream.py")
UPSTREAM_ID = "sim-a"
EXPECTED_TEXT = f"Hello from {UPSTREAM_ID}"


class Upstream:
    def __init__(self, base_url, record_path):
        self.base_url = base_url
        self.record_path = record_path

    def recorded(self):
        return [json.loads(line) for line in self.record_path.read_text().splitlines()]


@pytest.fixture
def upstream(tmp_path):
    record_path = tmp_path / "requests.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(UPSTREAM), "--host", "127.0.0.1", "--port", "0",
         "--id", UPSTREAM_ID, "--record", str(record_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("listening on "), f"upstream did not start: {line!r}"
        yield Upstream(f"http://{line.split()[-1]}", record_path)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def openai_client(upstream):
    return openai.OpenAI(base_url=f"{upstream.base_url}/v1", api_key="sk-dummy", max_retries=0)


@pytest.fixture
def anthropic_client(upstream):
    return anthropic.Anthropic(base_url=upstream.base_url, api_key="sk-ant-dummy", max_retries=0)


MESSAGES = [{"role": "user", "content": "say hello please"}]


def test_health(upstream):
    resp = requests.get(f"{upstream.base_url}/health", timeout=5)
    assert resp.status_code == 200
    assert resp.text == "ok"
    assert resp.headers["x-upstream-id"] == UPSTREAM_ID


def test_bad_json_is_openai_style_400(upstream):
    resp = requests.post(f"{upstream.base_url}/v1/chat/completions", data=b"{not json", timeout=5)
    assert resp.status_code == 400
    assert resp.headers["x-upstream-id"] == UPSTREAM_ID
    assert resp.json()["error"]["type"] == "invalid_request_error"


def test_unknown_path_is_404(openai_client):
    with pytest.raises(openai.NotFoundError):
        openai_client.embeddings.create(model="text-embedding-3-small", input="x")


def test_openai_chat_completion(openai_client):
    raw = openai_client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert raw.headers["x-upstream-id"] == UPSTREAM_ID
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == EXPECTED_TEXT
    assert choice.finish_reason == "stop"
    assert completion.usage.prompt_tokens == 3
    assert completion.usage.completion_tokens == 3
    assert completion.usage.total_tokens == 6


def test_openai_chat_completion_stream(openai_client):
    stream = openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-4o-mini" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == EXPECTED_TEXT
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens == 6


def test_openai_stream_without_usage(openai_client):
    chunks = list(openai_client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert all(c.usage is None and c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_anthropic_message(anthropic_client):
    raw = anthropic_client.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=64, messages=MESSAGES,
    )
    assert raw.headers["x-upstream-id"] == UPSTREAM_ID
    message = raw.parse()
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == "claude-haiku-4-5"
    assert [(b.type, b.text) for b in message.content] == [("text", EXPECTED_TEXT)]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 3
    assert message.usage.output_tokens == 3


def test_anthropic_message_stream_events(anthropic_client):
    events = list(anthropic_client.messages.create(
        model="claude-haiku-4-5", max_tokens=64, messages=MESSAGES, stream=True,
    ))
    assert [e.type for e in events] == [
        "message_start", "content_block_start",
        "content_block_delta", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop",
    ]


def test_anthropic_message_stream_helper(anthropic_client):
    with anthropic_client.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=MESSAGES) as stream:
        assert "".join(stream.text_stream) == EXPECTED_TEXT
        message = stream.get_final_message()
    assert message.content[0].text == EXPECTED_TEXT
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 3
    assert message.usage.output_tokens == 3


def test_record_captures_requests_with_auth(upstream, openai_client, anthropic_client):
    openai_client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    anthropic_client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=MESSAGES)

    chat, message = upstream.recorded()
    assert (chat["method"], chat["path"]) == ("POST", "/v1/chat/completions")
    assert chat["headers"]["authorization"] == "Bearer sk-dummy"
    assert chat["body"] == {"model": "gpt-4o-mini", "messages": MESSAGES}
    assert (message["method"], message["path"]) == ("POST", "/v1/messages")
    # anthropic 2.x sends api_key as a bearer token, not as x-api-key like the 0.x SDKs did.
    assert message["headers"]["authorization"] == "Bearer sk-ant-dummy"
    assert "x-api-key" not in message["headers"]
    assert "anthropic-version" in message["headers"]
    assert message["body"]["model"] == "claude-haiku-4-5"
    assert message["body"]["messages"] == MESSAGES


WEATHER_OPENAI = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
WEATHER_ANTHROPIC = [{"name": "get_weather", "description": "Weather in a city",
                      "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]


def test_tools_get_a_call_in_each_format(openai_client, anthropic_client):
    reply = openai_client.chat.completions.create(model="m", messages=MESSAGES, tools=WEATHER_OPENAI)
    call = reply.choices[0].message.tool_calls[0]
    assert (reply.choices[0].finish_reason, call.function.name) == ("tool_calls", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    chunks = list(openai_client.chat.completions.create(
        model="m", messages=MESSAGES, tools=WEATHER_OPENAI, stream=True))
    args = "".join(tc.function.arguments or "" for c in chunks if c.choices
                   for tc in c.choices[0].delta.tool_calls or [])
    assert json.loads(args) == {"city": "Paris"}

    message = anthropic_client.messages.create(
        model="m", max_tokens=64, messages=MESSAGES, tools=WEATHER_ANTHROPIC)
    assert message.stop_reason == "tool_use"
    assert (message.content[0].name, message.content[0].input) == ("get_weather", {"city": "Paris"})
    with anthropic_client.messages.stream(
            model="m", max_tokens=64, messages=MESSAGES, tools=WEATHER_ANTHROPIC) as stream:
        final = stream.get_final_message()
    assert final.content[0].input == {"city": "Paris"}


def test_failures_in_each_format(openai_client, anthropic_client):
    with pytest.raises(openai.RateLimitError):
        openai_client.chat.completions.create(model="fail-429", messages=MESSAGES)
    with pytest.raises(anthropic.InternalServerError) as err:
        anthropic_client.messages.create(model="fail-500", max_tokens=8, messages=MESSAGES)
    assert err.value.body["error"]["type"] == "api_error"
