"""Replies Envoy makes itself, as the official SDKs see them: typed errors with the body parsed,
streaming or not, never a plain-text page the SDK cannot read; and what each SDK sees when a
stream breaks after it started, when no status can change any more."""

import anthropic
import httpx2
import openai
import pytest

from conftest import Gateway, Upstream, free_port, openai_backend, route

MESSAGES = [{"role": "user", "content": "hi"}]

# The route timeout of the models whose backend goes quiet.
TIMEOUT = "2s"

# Per model: the status, the OpenAI and Anthropic error types, `retry-after`, and words of the
# message (Envoy's response code details). A `claude-` model's backend speaks Anthropic, the
# others' OpenAI, so that each client meets a backend of its own schema and one of the other
# (whose request path the upstream phase rewrites).
FAILURES = {
    "down": (503, "server_error", "overloaded_error", "1", "remote_connection_failure"),
    "reset": (503, "server_error", "overloaded_error", "1", "connection_termination"),
    "claude-reset": (503, "server_error", "overloaded_error", "1", "connection_termination"),
    "silent": (504, "server_error", "timeout_error", None, "response_timeout"),
    "claude-silent": (504, "server_error", "timeout_error", None, "response_timeout"),
    "garbage": (502, "server_error", "api_error", None, "protocol_error"),
    "nope": (404, "invalid_request_error", "not_found_error", None, "No route matches"),
}

OPENAI_ERRORS = {404: openai.NotFoundError, 502: openai.InternalServerError,
                 503: openai.InternalServerError, 504: openai.InternalServerError}
ANTHROPIC_ERRORS = {404: anthropic.NotFoundError, 502: anthropic.InternalServerError,
                    503: anthropic.ServiceUnavailableError, 504: anthropic.GatewayTimeoutError}


class Down:
    """A backend address nothing listens on: Envoy's connection is refused."""
    host = "127.0.0.1"

    def __init__(self):
        self.port = free_port()


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    """An upstream that misbehaves as its model name says (see upstream.py)."""
    upstream = Upstream("up", tmp_path_factory.mktemp("upstream"))
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory, up):
    """One gateway for every failure: `up` reached as an OpenAI and as an Anthropic backend, and
    a backend that is down."""
    rules = [("ok", "oa"), ("down", "down"), ("garbage", "oa")]
    for model in ("silent", "reset", "stall", "cut-reset"):
        timeout = (TIMEOUT,) if model in ("silent", "stall") else ()
        rules += [(model, "oa", *timeout), (f"claude-{model}", "an", *timeout)]
    manifests = (route(rules) + openai_backend("oa", up) + openai_backend("an", up, "Anthropic")
                 + openai_backend("down", Down()))
    gateway = Gateway(tmp_path_factory.mktemp("gateway"), manifests, free_port())
    try:
        gateway.wait_serving("ok")
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def clients(gw):
    return (openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="k", max_retries=0),
            anthropic.Anthropic(base_url=gw.base_url, api_key="k", max_retries=0))


def assert_reply(err, status, retry_after):
    """What every Envoy reply shows: its status, JSON, and `retry-after` only on a 503."""
    assert err.status_code == status, err.body
    assert err.response.headers["content-type"] == "application/json"
    assert err.response.headers.get("retry-after") == retry_after


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("model", FAILURES)
def test_openai_sdk_raises_a_typed_error(clients, model, stream):
    status, kind, _, retry_after, words = FAILURES[model]
    with pytest.raises(openai.APIStatusError) as err:
        clients[0].chat.completions.create(model=model, messages=MESSAGES, stream=stream)
    assert type(err.value) is OPENAI_ERRORS[status]
    assert_reply(err.value, status, retry_after)
    # The SDK parsed the body: `body` is its `error` object, the attributes read from it.
    assert set(err.value.body) == {"message", "type", "param", "code"}, err.value.body
    assert err.value.type == kind
    assert words in err.value.body["message"]
    if status == 404:
        assert err.value.code == "model_not_found"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("model", FAILURES)
def test_anthropic_sdk_raises_a_typed_error(clients, model, stream):
    status, _, kind, retry_after, words = FAILURES[model]
    with pytest.raises(anthropic.APIStatusError) as err:
        clients[1].messages.create(model=model, max_tokens=5, messages=MESSAGES, stream=stream)
    assert type(err.value) is ANTHROPIC_ERRORS[status]
    assert_reply(err.value, status, retry_after)
    assert err.value.body["type"] == "error", err.value.body
    assert set(err.value.body["error"]) == {"type", "message"}, err.value.body
    assert err.value.type == kind
    assert words in err.value.api_message


def test_the_messages_helper_raises_before_its_first_event(clients):
    """`messages.stream()` asks for a stream too: the error comes as the block is entered."""
    with pytest.raises(anthropic.ServiceUnavailableError) as err:
        with clients[1].messages.stream(model="down", max_tokens=5, messages=MESSAGES):
            pass
    assert err.value.type == "overloaded_error"


def test_an_unknown_path_is_a_404_in_the_format_of_its_api(clients, gw):
    """Paths the gateway serves no API at: a 404 in OpenAI's format, or Anthropic's for a path
    under Anthropic's API (`/v1/messages/...`, `/anthropic/...`), naming the paths it serves."""
    with pytest.raises(openai.NotFoundError) as err:
        clients[0].batches.create(completion_window="24h", endpoint="/v1/chat/completions",
                                  input_file_id="file-1")
    assert err.value.response.headers["content-type"] == "application/json"
    assert err.value.type == "not_found_error"
    assert "/v1/batches" in err.value.body["message"]
    assert "/v1/chat/completions" in err.value.body["message"]

    with pytest.raises(anthropic.NotFoundError) as err:
        clients[1].messages.batches.create(requests=[{"custom_id": "a", "params": {
            "model": "ok", "max_tokens": 8, "messages": MESSAGES}}])
    assert err.value.response.headers["content-type"] == "application/json"
    assert err.value.body["type"] == "error", err.value.body
    assert err.value.type == "not_found_error"
    assert "/v1/messages/batches" in err.value.api_message

    anthropic_prefix = anthropic.Anthropic(base_url=f"{gw.base_url}/anthropic", api_key="k",
                                           max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as err:
        anthropic_prefix.beta.files.list()
    assert err.value.body["type"] == "error", err.value.body


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_sdks_raise_request_too_large_for_a_body_over_envoys_limit(clients, stream):
    """Envoy refuses a body over its 50 MiB buffer limit before aixds sees it (and while the SDK
    is still sending it): the SDKs read the answer all the same."""
    big = [{"role": "user", "content": "x" * (60 * 1024 * 1024)}]
    with pytest.raises(openai.APIStatusError) as err:
        clients[0].chat.completions.create(model="ok", messages=big, stream=stream)
    assert type(err.value) is openai.APIStatusError
    assert_reply(err.value, 413, None)
    assert err.value.type == "invalid_request_error"
    assert "request_payload_too_large" in err.value.body["message"]
    with pytest.raises(anthropic.ContentTooLargeError) as err:
        clients[1].messages.create(model="ok", max_tokens=5, messages=big, stream=stream)
    assert_reply(err.value, 413, None)
    assert err.value.type == "request_too_large"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_sdks_raise_request_too_large_for_a_body_over_aixds_limit(upstreams, gateway, stream):
    ok = upstreams("up-ok")
    gw = gateway(route([("ok", "ok")]) + openai_backend("ok", ok),
                 args=("--max-request-body", "1000"))
    gw.wait_serving("ok")
    big = [{"role": "user", "content": "x" * 2000}]
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="ok", messages=big, stream=stream)
    assert type(err.value) is openai.APIStatusError
    assert_reply(err.value, 413, None)
    assert err.value.type == "invalid_request_error"
    assert "limit of 1000 bytes" in err.value.body["message"]
    client = anthropic.Anthropic(base_url=gw.base_url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.ContentTooLargeError) as err:
        client.messages.create(model="ok", max_tokens=5, messages=big, stream=stream)
    assert_reply(err.value, 413, None)
    assert err.value.type == "request_too_large"


@pytest.mark.parametrize("model", ["stall", "cut-reset", "claude-stall", "claude-cut-reset"])
def test_a_stream_broken_after_it_started_fails_the_iteration(clients, up, model):
    """The backend sends the start of a stream, then goes quiet until the route timeout
    (`stall`) or resets its connection (`cut-reset`). The status was 200 and cannot change:
    Envoy ends the client's connection without the chunked body's end. The OpenAI SDK raises
    its connection error while iterating; the Anthropic SDK lets the transport's error through
    unwrapped. Neither sees a finish reason or a stop, so neither takes the text for whole."""
    chunks = clients[0].chat.completions.create(model=model, messages=MESSAGES, stream=True)
    got = [next(chunks), next(chunks)]
    assert [c.choices[0].delta.content for c in got] == ["", "Hello"]
    if "cut" in model:
        up.cut()
    with pytest.raises(openai.APIConnectionError):
        got.extend(chunks)
    assert len(got) == 2 and all(c.choices[0].finish_reason is None for c in got)

    events = clients[1].messages.create(model=model, max_tokens=5, messages=MESSAGES,
                                        stream=True)
    got = [next(events), next(events), next(events)]
    assert [e.type for e in got] == ["message_start", "content_block_start",
                                     "content_block_delta"]
    if "cut" in model:
        up.cut()
    with pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"):
        got.extend(events)
    assert len(got) == 3
