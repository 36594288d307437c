"""Self-tests of the strict fake provider servers in e2e/providers/: each accepts what the real API
accepts (sent by the official client where Python has one: botocore for Bedrock, the anthropic
SDK for Anthropic on Vertex) and refuses what the real API refuses, in the provider's own error
shape. The translation tests rely on this strictness, so it is tested itself."""

import base64
import datetime
import json
import struct
import time
import zlib
from unittest import mock

import anthropic
import botocore.auth
import botocore.session
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

import fakeserver
import google_token
from conftest import PROVIDERS, REPO, Upstream, free_port

ACCESS_KEY, SECRET_KEY, REGION = "AKIDFAKEPROVIDER", "fake-secret-key", "eu-west-3"
CLAUDE = "anthropic.claude-3-5-haiku-20241022-v1:0"
USER = [{"role": "user", "content": [{"text": "what is the weather"}]}]
WEATHER_SPEC = {"toolSpec": {"name": "get_weather", "description": "Weather of a city",
                             "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}}}}
COHERE_KEY = "co-fake-key"


def start(tmp_path_factory, provider, server_id, *args, port=0):
    return Upstream(server_id, tmp_path_factory.mktemp(server_id), port=port,
                    script=PROVIDERS / f"{provider}.py", args=args)


# ---------------------------------------------------------------------------------------------
# AWS event-stream framing, decoded independently of botocore.

def decode_event_stream(data):
    """The (headers, payload) messages of an AWS event stream, checking both CRCs and lengths."""
    messages = []
    while data:
        total, headers_length, prelude_crc = struct.unpack(">III", data[:12])
        assert zlib.crc32(data[:8]) == prelude_crc, "prelude CRC"
        message, data = data[:total], data[total:]
        assert len(message) == total, "truncated message"
        assert zlib.crc32(message[:-4]) == struct.unpack(">I", message[-4:])[0], "message CRC"
        raw, headers = message[12:12 + headers_length], {}
        while raw:
            name_length = raw[0]
            name = raw[1:1 + name_length].decode()
            assert raw[1 + name_length] == 7, "only string headers are expected"
            (value_length,) = struct.unpack(">H", raw[2 + name_length:4 + name_length])
            headers[name] = raw[4 + name_length:4 + name_length + value_length].decode()
            raw = raw[4 + name_length + value_length:]
        messages.append((headers, json.loads(message[12 + headers_length:-4])))
    return messages


def test_split_writer_cuts_messages_at_odd_places_and_loses_nothing():
    pieces = []
    writer = fakeserver.SplitWriter(pieces.append)
    messages = [bytes(range(40)), b"x" * 3, bytes(range(100, 130))]
    for message in messages:
        writer.send(message)
    writer.close()
    assert b"".join(pieces) == b"".join(messages)
    assert len(pieces) > 2 * len(messages), pieces
    boundaries = {sum(len(p) for p in pieces[:i]) for i in range(len(pieces) + 1)}
    assert 40 not in boundaries and 43 not in boundaries, "a message boundary never ends a write"


FIXTURES = REPO / "tests" / "fixtures" / "providers"


@pytest.mark.parametrize("name", ["converse-stream", "converse-stream-tool-use", "invoke-anthropic-stream"])
def test_bedrock_fixture_frames_match_their_readable_events(name):
    frames = decode_event_stream((FIXTURES / "bedrock" / f"{name}.bin").read_bytes())
    readable = [json.loads(line) for line in (FIXTURES / "bedrock" / f"{name}.jsonl").read_text().splitlines()]
    assert [{"event-type": h[":event-type"], "payload": p} for h, p in frames] == readable
    assert all(h[":message-type"] == "event" and h[":content-type"] == "application/json" for h, _ in frames)
    if name == "invoke-anthropic-stream":
        events = [json.loads(line) for line in (FIXTURES / "bedrock" / f"{name}.events.jsonl").read_text().splitlines()]
        assert [json.loads(base64.b64decode(p["bytes"])) for _, p in frames] == events


# ---------------------------------------------------------------------------------------------
# Bedrock

@pytest.fixture(scope="module")
def bedrock(tmp_path_factory):
    server = start(tmp_path_factory, "bedrock", "bedrock-a", "--access-key-id", ACCESS_KEY,
                   "--secret-access-key", SECRET_KEY, "--region", REGION)
    yield server
    server.stop()


def bedrock_client(server, secret=SECRET_KEY, token=None):
    return botocore.session.get_session().create_client(
        "bedrock-runtime", region_name=REGION, endpoint_url=server.base_url, aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=secret, aws_session_token=token, config=Config(retries={"max_attempts": 0}))


def signed_post(server, path, body, secret=SECRET_KEY, when=None, token=None, tamper=None):
    """POSTs `body` to the server, SigV4-signed by botocore (at `when`, if given); `tamper`
    changes the body after signing."""
    raw = json.dumps(body).encode()
    request = AWSRequest(method="POST", url=f"{server.base_url}{path}", data=raw,
                         headers={"Content-Type": "application/json"})
    signer = SigV4Auth(Credentials(ACCESS_KEY, secret, token), "bedrock", REGION)
    if when is None:
        signer.add_auth(request)
    else:
        with mock.patch.object(botocore.auth, "get_current_datetime", return_value=when):
            signer.add_auth(request)
    data = tamper(raw) if tamper else raw
    return requests.post(f"{server.base_url}{path}", data=data, headers=dict(request.headers.items()), timeout=10)


def assert_bedrock_error(response, status, kind, fragment=""):
    assert response.status_code == status, response.text
    assert response.headers["x-amzn-ErrorType"] == kind
    assert fragment in response.json()["message"]


def test_bedrock_converse_answers_a_botocore_client(bedrock):
    reply = bedrock_client(bedrock).converse(
        modelId=CLAUDE, messages=USER, system=[{"text": "be brief"}], inferenceConfig={"maxTokens": 50, "temperature": 0.2})
    assert reply["output"]["message"] == {"role": "assistant", "content": [{"text": "Hello from bedrock-a"}]}
    assert reply["stopReason"] == "end_turn"
    assert reply["usage"] == {"inputTokens": 6, "outputTokens": 3, "totalTokens": 9}
    assert reply["metrics"]["latencyMs"] >= 1
    recorded = [r for r in bedrock.recorded() if r["path"].endswith("/converse")][-1]
    # botocore percent-encodes the model id's ':' in the path; the signature covers that path.
    assert recorded["path"] == "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    assert recorded["body"]["system"] == [{"text": "be brief"}]


def test_bedrock_converse_stream_frames_decode_with_both_crcs(bedrock):
    response = signed_post(bedrock, f"/model/{CLAUDE}/converse-stream", {"messages": USER})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/vnd.amazon.eventstream"
    messages = decode_event_stream(response.content)
    assert all(h[":message-type"] == "event" and h[":content-type"] == "application/json" for h, _ in messages)
    assert [h[":event-type"] for h, _ in messages] == [
        "messageStart", "contentBlockDelta", "contentBlockDelta", "contentBlockDelta", "contentBlockStop",
        "messageStop", "metadata"]
    assert "".join(p["delta"]["text"] for h, p in messages if h[":event-type"] == "contentBlockDelta") == \
        "Hello from bedrock-a"
    assert messages[5][1]["stopReason"] == "end_turn"
    assert messages[6][1]["usage"] == {"inputTokens": 4, "outputTokens": 3, "totalTokens": 7}


def test_bedrock_converse_stream_tool_call_through_botocore(bedrock):
    reply = bedrock_client(bedrock).converse_stream(modelId=CLAUDE, messages=USER, toolConfig={"tools": [WEATHER_SPEC]})
    events = list(reply["stream"])
    start = events[1]["contentBlockStart"]["start"]["toolUse"]
    assert start["name"] == "get_weather"
    arguments = "".join(e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events if "contentBlockDelta" in e)
    assert json.loads(arguments) == {"city": "Paris"}
    assert events[-2] == {"messageStop": {"stopReason": "tool_use"}}


def test_bedrock_tool_result_gets_text_and_tool_choice_names_the_tool(bedrock):
    client = bedrock_client(bedrock)
    other = {"toolSpec": {**WEATHER_SPEC["toolSpec"], "name": "get_time"}}
    first = client.converse(modelId=CLAUDE, messages=USER, toolConfig={
        "tools": [WEATHER_SPEC, other], "toolChoice": {"tool": {"name": "get_time"}}})
    call = first["output"]["message"]["content"][0]["toolUse"]
    assert (call["name"], call["input"], first["stopReason"]) == ("get_time", {"city": "Paris"}, "tool_use")
    second = client.converse(modelId=CLAUDE, toolConfig={"tools": [WEATHER_SPEC, other]}, messages=[
        *USER, first["output"]["message"],
        {"role": "user", "content": [{"toolResult": {"toolUseId": call["toolUseId"], "content": [{"json": {"t": "noon"}}]}}]}])
    assert second["output"]["message"]["content"] == [{"text": "Hello from bedrock-a"}]


def test_bedrock_stop_reasons_follow_max_tokens_stop_sequences_and_knobs(bedrock):
    client = bedrock_client(bedrock)
    limited = client.converse(modelId=CLAUDE, messages=USER, inferenceConfig={"maxTokens": 2})
    assert (limited["output"]["message"]["content"][0]["text"], limited["stopReason"]) == ("Hello from", "max_tokens")
    stopped = client.converse(modelId=CLAUDE, messages=USER, inferenceConfig={"stopSequences": [" from"]})
    assert (stopped["output"]["message"]["content"][0]["text"], stopped["stopReason"]) == ("Hello", "stop_sequence")
    assert client.converse(modelId="guardrail-model", messages=USER)["stopReason"] == "guardrail_intervened"
    assert client.converse(modelId="filtered-model", messages=USER)["stopReason"] == "content_filtered"


def test_bedrock_cache_point_writes_then_reads(bedrock):
    client = bedrock_client(bedrock)
    system = [{"text": "a long and stable system prompt"}, {"cachePoint": {"type": "default"}}]
    first = client.converse(modelId="cache-model", system=system, messages=USER)["usage"]
    second = client.converse(modelId="cache-model", system=system, messages=USER)["usage"]
    assert (first["cacheWriteInputTokens"], first["cacheReadInputTokens"], first["inputTokens"]) == (6, 0, 4)
    assert (second["cacheWriteInputTokens"], second["cacheReadInputTokens"], second["inputTokens"]) == (0, 6, 4)
    assert second["totalTokens"] == 4 + 6 + 3


def test_bedrock_images_and_documents_are_accepted(bedrock):
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
    response = signed_post(bedrock, "/model/m/converse", {"messages": [{"role": "user", "content": [
        {"text": "look"}, {"image": {"format": "png", "source": {"bytes": png}}},
        {"document": {"format": "txt", "name": "notes (v2)", "source": {"bytes": base64.b64encode(b"hi").decode()}}}]}]})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("body, fragment", [
    ({"messages": USER, "temperature": 0.5}, "unknown field 'temperature'"),
    ({"messages": USER, "inferenceConfig": {"max_tokens": 5}}, "unknown field 'max_tokens'"),
    ({"messages": [{"role": "assistant", "content": [{"text": "hi"}]}]}, "start with a user message"),
    ({"messages": USER + USER}, "alternate between user and assistant"),
    ({"messages": [{"role": "user", "content": [{"text": "  "}]}]}, "is blank"),
    ({"messages": [{"role": "user", "content": []}]}, "is empty"),
    ({"messages": [{"role": "user", "content": [{"text": "a", "image": {}}]}]}, "exactly one of"),
    ({"messages": [{"role": "user", "content": [{"image": {"format": "bmp", "source": {"bytes": "AA=="}}}]}]},
     "format must be one of"),
    ({"messages": [{"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": "not base64!"}}}]}]},
     "not valid base64"),
    ({"messages": [*USER, {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather",
                                                                         "input": {}}}]}]},
     "toolConfig field must be defined"),
    ({"messages": [*USER, {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather",
                                                                         "input": {}}}]},
                   {"role": "user", "content": [{"text": "and?"}]}], "toolConfig": {"tools": [WEATHER_SPEC]}},
     "Expected toolResult blocks"),
    ({"messages": [{"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "x"}]}}]}],
      "toolConfig": {"tools": [WEATHER_SPEC]}}, "exceeds the number of toolUse"),
    ({"messages": USER, "toolConfig": {"tools": [WEATHER_SPEC], "toolChoice": {"tool": {"name": "nope"}}}},
     "is not one of the tools"),
    ({"messages": USER, "toolConfig": {"tools": [{"toolSpec": {"name": "bad name", "inputSchema": {"json": {}}}}]}},
     "must match"),
    ({"messages": USER, "inferenceConfig": {"topP": 1.5}}, "topP must be at most 1"),
])
def test_bedrock_converse_refuses_what_bedrock_refuses(bedrock, body, fragment):
    assert_bedrock_error(signed_post(bedrock, f"/model/{CLAUDE}/converse", body), 400, "ValidationException", fragment)


def test_bedrock_refuses_bad_signatures(bedrock):
    path = f"/model/{CLAUDE}/converse"
    body = {"messages": USER}
    assert_bedrock_error(signed_post(bedrock, path, body, secret="wrong"), 403, "InvalidSignatureException",
                         "signature we calculated does not match")
    stale = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=10)
    assert_bedrock_error(signed_post(bedrock, path, body, when=stale), 403, "InvalidSignatureException",
                         "Signature expired")
    assert_bedrock_error(signed_post(bedrock, path, body, tamper=lambda raw: raw.replace(b"weather", b"WEATHER")),
                         403, "InvalidSignatureException", "does not match")
    assert_bedrock_error(signed_post(bedrock, path, body, token="unexpected"), 403, "UnrecognizedClientException")
    unsigned = requests.post(f"{bedrock.base_url}{path}", json=body, timeout=10)
    assert_bedrock_error(unsigned, 403, "MissingAuthenticationTokenException")
    with pytest.raises(ClientError) as refused:
        bedrock_client(bedrock, secret="wrong").converse(modelId=CLAUDE, messages=USER)
    assert refused.value.response["Error"]["Code"] == "InvalidSignatureException"


def test_bedrock_checks_the_session_token(providers):
    server = providers("bedrock", "bedrock-sts", "--access-key-id", ACCESS_KEY, "--secret-access-key", SECRET_KEY,
                       "--region", REGION, "--session-token", "sts-token")
    assert bedrock_client(server, token="sts-token").converse(modelId=CLAUDE, messages=USER)["stopReason"] == "end_turn"
    with pytest.raises(ClientError) as refused:
        bedrock_client(server).converse(modelId=CLAUDE, messages=USER)
    assert refused.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_bedrock_failure_knob_uses_bedrock_error_types(bedrock):
    with pytest.raises(ClientError) as refused:
        bedrock_client(bedrock).converse(modelId="model-fail-429", messages=USER)
    assert refused.value.response["Error"]["Code"] == "ThrottlingException"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429


ANTHROPIC_BODY = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
                  "messages": [{"role": "user", "content": "say hello"}]}


def test_bedrock_invoke_anthropic_message(bedrock):
    reply = bedrock_client(bedrock).invoke_model(modelId=CLAUDE, body=json.dumps(ANTHROPIC_BODY))
    message = json.loads(reply["body"].read())
    assert message["content"] == [{"type": "text", "text": "Hello from bedrock-a"}]
    assert (message["stop_reason"], message["usage"]["input_tokens"], message["usage"]["output_tokens"]) == ("end_turn", 2, 3)
    assert reply["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-output-token-count"] == "3"


def test_bedrock_invoke_stream_wraps_anthropic_events_in_chunks(bedrock):
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    response = signed_post(bedrock, f"/model/{CLAUDE}/invoke-with-response-stream", {**ANTHROPIC_BODY, "tools": tools})
    assert response.status_code == 200
    frames = decode_event_stream(response.content)
    assert {h[":event-type"] for h, _ in frames} == {"chunk"}
    events = [json.loads(base64.b64decode(p["bytes"])) for _, p in frames]
    assert [e["type"] for e in events] == ["message_start", "ping", "content_block_start", "content_block_delta",
                                           "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert events[2]["content_block"]["name"] == "get_weather"
    assert json.loads("".join(e["delta"]["partial_json"] for e in events[3:5])) == {"city": "Paris"}
    assert events[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 3


@pytest.mark.parametrize("change, fragment", [
    ({"anthropic_version": "vertex-2023-10-16"}, "anthropic_version must be 'bedrock-2023-05-31'"),
    ({"anthropic_version": None}, "missing required field 'anthropic_version'"),
    ({"model": "claude"}, "unknown field 'model'"),
    ({"stream": True}, "unknown field 'stream'"),
    ({"max_tokens": "64"}, "max_tokens must be an integer"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]}]},
     "unexpected tool_use_id"),
    ({"messages": [{"role": "user", "content": "q"},
                   {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
                   {"role": "user", "content": [{"type": "text", "text": "?"},
                                                {"type": "tool_result", "tool_use_id": "toolu_1"}]}]},
     "tool_result blocks must come first"),
    ({"messages": [{"role": "user", "content": "q"},
                   {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
                   {"role": "user", "content": "no result"}]}, "without tool_result blocks"),
])
def test_bedrock_invoke_refuses_bad_anthropic_bodies(bedrock, change, fragment):
    body = {k: v for k, v in {**ANTHROPIC_BODY, **change}.items() if v is not None}
    assert_bedrock_error(signed_post(bedrock, f"/model/{CLAUDE}/invoke", body), 400, "ValidationException", fragment)


def test_bedrock_titan_embeddings(bedrock):
    client = bedrock_client(bedrock)
    reply = client.invoke_model(modelId="amazon.titan-embed-text-v2:0",
                                body=json.dumps({"inputText": "two words", "dimensions": 256}))
    body = json.loads(reply["body"].read())
    assert (len(body["embedding"]), body["inputTextTokenCount"]) == (256, 2)
    assert abs(sum(v * v for v in body["embedding"]) - 1) < 1e-9
    assert_bedrock_error(signed_post(bedrock, "/model/amazon.titan-embed-text-v2:0/invoke",
                                     {"inputText": "x", "dimensions": 300}), 400, "ValidationException", "dimensions")


# ---------------------------------------------------------------------------------------------
# Google token endpoint and Vertex AI

@pytest.fixture(scope="module")
def vertex(tmp_path_factory):
    port = free_port()
    key_path = tmp_path_factory.mktemp("sa") / "key.json"
    account = google_token.write_service_account(key_path, f"http://127.0.0.1:{port}/token")
    server = start(tmp_path_factory, "vertex", "vertex-a", "--service-account", str(key_path), "--project", "proj-1",
                   port=port)
    server.account = account
    yield server
    server.stop()


def assertion(account, aud=None, scope=google_token.CLOUD_PLATFORM, lifetime=3600, key=None, iat=None):
    """A JWT bearer assertion for `account`, as Google's client libraries make it."""
    iat = int(time.time()) if iat is None else iat
    header = {"alg": "RS256", "typ": "JWT", "kid": account["private_key_id"]}
    claims = {"iss": account["client_email"], "scope": scope, "aud": aud or account["token_uri"], "iat": iat,
              "exp": iat + lifetime}
    signing_input = f"{google_token.b64url(json.dumps(header).encode())}.{google_token.b64url(json.dumps(claims).encode())}"
    private = key or serialization.load_pem_private_key(account["private_key"].encode(), password=None)
    signature = private.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{google_token.b64url(signature)}"


def grant(server, jwt, grant_type=google_token.JWT_BEARER):
    return requests.post(server.account["token_uri"], data={"grant_type": grant_type, "assertion": jwt}, timeout=10)


def access_token(server):
    response = grant(server, assertion(server.account))
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def test_token_endpoint_grants_a_signed_assertion_and_lists_it(vertex):
    response = grant(vertex, assertion(vertex.account))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 3600)
    issued = requests.get(f"{vertex.base_url}/tokens", timeout=10).json()
    assert body["access_token"] in [t["access_token"] for t in issued]


def test_token_endpoint_refuses_bad_assertions(vertex, tmp_path):
    other = google_token.write_service_account(tmp_path / "other.json", vertex.account["token_uri"],
                                               client_email="stranger@elsewhere.iam.gserviceaccount.com")
    foreign_key = serialization.load_pem_private_key(other["private_key"].encode(), password=None)
    cases = [
        (assertion(vertex.account, key=foreign_key), "invalid_grant", "Signature"),
        (assertion({**vertex.account, "private_key_id": "0" * 32}), "invalid_grant", "kid"),
        (assertion(vertex.account, aud="https://oauth2.googleapis.com/token"), "invalid_grant", "aud"),
        (assertion(vertex.account, scope="https://www.googleapis.com/auth/userinfo.email"), "invalid_scope", "cloud-platform"),
        (assertion(vertex.account, lifetime=7200), "invalid_grant", "short-lived"),
        (assertion(vertex.account, iat=int(time.time()) - 7200), "invalid_grant", "short-lived"),
        (assertion(other), "invalid_grant", "not found"),
        ("not.a.jwt", "invalid_grant", "Invalid JWT"),
    ]
    for jwt, error, fragment in cases:
        response = grant(vertex, jwt)
        assert response.status_code == 400, (error, response.text)
        assert response.json()["error"] == error
        assert fragment in response.json()["error_description"]
    wrong_grant = grant(vertex, assertion(vertex.account), grant_type="client_credentials")
    assert wrong_grant.json()["error"] == "unsupported_grant_type"


GEMINI = "/v1/projects/proj-1/locations/us-central1/publishers/google/models/gemini-2.0-flash-001"
FUNCTIONS = [{"functionDeclarations": [{"name": "get_weather", "description": "Weather of a city", "parameters": {
    "type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}]
CONTENTS = [{"role": "user", "parts": [{"text": "what is the weather"}]}]


def gemini(server, body, method="generateContent", token=None, path=GEMINI, query=""):
    headers = {"Authorization": f"Bearer {token or access_token(server)}"}
    return requests.post(f"{server.base_url}{path}:{method}{query}", json=body, headers=headers, timeout=10)


def sse_events(response):
    """The JSON data of an SSE response whose events end in CRLF CRLF."""
    assert "\r\n\r\n" in response.text
    return [json.loads(event.removeprefix("data: ")) for event in response.text.split("\r\n\r\n") if event]


def test_vertex_generate_content(vertex):
    response = gemini(vertex, {"contents": CONTENTS, "systemInstruction": {"parts": [{"text": "be brief"}]},
                               "generationConfig": {"temperature": 0.3, "maxOutputTokens": 100}})
    assert response.status_code == 200, response.text
    body = response.json()
    candidate = body["candidates"][0]
    assert candidate["content"] == {"role": "model", "parts": [{"text": "Hello from vertex-a"}]}
    assert candidate["finishReason"] == "STOP"
    assert {r["category"] for r in candidate["safetyRatings"]} >= {"HARM_CATEGORY_HATE_SPEECH"}
    usage = body["usageMetadata"]
    assert (usage["promptTokenCount"], usage["candidatesTokenCount"], usage["totalTokenCount"]) == (6, 3, 9)
    assert body["modelVersion"] == "gemini-2.0-flash-001" and body["responseId"]


def test_vertex_stream_is_sse_with_crlf_and_usage_last(vertex):
    response = gemini(vertex, {"contents": CONTENTS}, method="streamGenerateContent", query="?alt=sse")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    chunks = sse_events(response)
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == "Hello from vertex-a"
    assert [("usageMetadata" in c, c["candidates"][0].get("finishReason")) for c in chunks] == [
        (False, None), (False, None), (True, "STOP")]
    array = gemini(vertex, {"contents": CONTENTS}, method="streamGenerateContent")
    assert len(array.json()) == 3


def test_vertex_function_call_then_response(vertex):
    first = gemini(vertex, {"contents": CONTENTS, "tools": FUNCTIONS}).json()
    call = first["candidates"][0]["content"]["parts"][0]["functionCall"]
    assert call == {"name": "get_weather", "args": {"city": "Paris"}}
    second = gemini(vertex, {"tools": FUNCTIONS, "contents": [
        *CONTENTS, first["candidates"][0]["content"],
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}]}]})
    assert second.json()["candidates"][0]["content"]["parts"] == [{"text": "Hello from vertex-a"}]
    none = gemini(vertex, {"contents": CONTENTS, "tools": FUNCTIONS,
                           "tool_config": {"function_calling_config": {"mode": "NONE"}}})
    assert none.json()["candidates"][0]["content"]["parts"] == [{"text": "Hello from vertex-a"}], "snake_case works"


def test_vertex_json_mode_fits_the_response_schema(vertex):
    schema = {"type": "OBJECT", "properties": {"name": {"type": "STRING"}, "age": {"type": "INTEGER"},
                                               "tags": {"type": "ARRAY", "items": {"type": "STRING"}}},
              "required": ["name", "age"]}
    body = gemini(vertex, {"contents": CONTENTS, "generationConfig": {
        "responseMimeType": "application/json", "responseSchema": schema}}).json()
    assert json.loads(body["candidates"][0]["content"]["parts"][0]["text"]) == {"name": "Hello from vertex-a", "age": 1}


def test_vertex_candidates_and_finish_reasons(vertex):
    two = gemini(vertex, {"contents": CONTENTS, "generationConfig": {"candidateCount": 2}}).json()
    assert [c.get("index", 0) for c in two["candidates"]] == [0, 1]
    assert two["usageMetadata"]["candidatesTokenCount"] == 6
    short = gemini(vertex, {"contents": CONTENTS, "generationConfig": {"maxOutputTokens": 1}}).json()
    assert (short["candidates"][0]["content"]["parts"], short["candidates"][0]["finishReason"]) == (
        [{"text": "Hello"}], "MAX_TOKENS")
    safety_path = GEMINI.replace("gemini-2.0-flash-001", "gemini-safety")
    blocked = gemini(vertex, {"contents": CONTENTS}, path=safety_path).json()["candidates"][0]
    assert "content" not in blocked and blocked["finishReason"] == "SAFETY"
    assert any(r.get("blocked") for r in blocked["safetyRatings"])


@pytest.mark.parametrize("body, fragment", [
    ({"contents": CONTENTS, "temperature": 0.2}, "unknown field 'temperature'"),
    ({"contents": [{"role": "assistant", "parts": [{"text": "hi"}]}]}, "valid role"),
    ({"contents": [{"role": "user", "parts": [{"text": ""}]}]}, "empty text"),
    ({"contents": [{"role": "user", "parts": []}]}, "at least 1"),
    ({"contents": CONTENTS, "tools": [{"functionDeclarations": [{"name": "f", "parameters": {
        "type": "object", "properties": {}, "additionalProperties": False}}]}]}, "unknown field 'additionalProperties'"),
    ({"contents": CONTENTS, "tools": [{"functionDeclarations": [{"name": "f", "parameters": {
        "$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}}]}]}, "unknown field '$schema'"),
    ({"contents": CONTENTS, "tools": [{"functionDeclarations": [{"name": "f", "parameters": {
        "type": ["string", "null"]}}]}]}, "invalid value"),
    ({"contents": CONTENTS, "tools": [{"functionDeclarations": [{"name": "1f"}]}]}, "must start with a letter"),
    ({"contents": [*CONTENTS, {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]},
     "right after a function call turn"),
    ({"contents": [*CONTENTS, {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}},
                                                          {"functionCall": {"name": "g", "args": {}}}]},
                   {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]},
     "number of function response parts"),
    ({"contents": CONTENTS, "toolConfig": {"functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["f"]}},
      "tools": [{"functionDeclarations": [{"name": "f"}]}]}, "only be set when the mode is ANY"),
    ({"contents": CONTENTS, "generationConfig": {"responseSchema": {"type": "OBJECT"}}}, "needs responseMimeType"),
    ({"contents": CONTENTS, "generationConfig": {"stopSequences": list("abcdef")}}, "at most 5"),
    ({"contents": CONTENTS, "generationConfig": {"max_tokens": 5}}, "unknown field 'max_tokens'"),
    ({"contents": CONTENTS, "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_ALL"}]},
     "invalid value"),
])
def test_vertex_refuses_what_gemini_refuses(vertex, body, fragment):
    response = gemini(vertex, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert fragment in error["message"]


def test_vertex_refuses_missing_foreign_or_expired_tokens(vertex, providers, tmp_path):
    for headers in ({}, {"Authorization": "Bearer ya29.forged"}, {"Authorization": access_token(vertex)}):
        response = requests.post(f"{vertex.base_url}{GEMINI}:generateContent", json={"contents": CONTENTS},
                                 headers=headers, timeout=10)
        assert response.status_code == 401
        assert response.json()["error"]["status"] == "UNAUTHENTICATED"
    port = free_port()
    account = google_token.write_service_account(tmp_path / "key.json", f"http://127.0.0.1:{port}/token")
    short = providers("vertex", "vertex-short", "--service-account", str(tmp_path / "key.json"), "--token-lifetime", "0",
                      port=port)
    short.account = account
    expired = access_token(short)
    assert gemini(short, {"contents": CONTENTS}, token=expired).status_code == 401


def test_vertex_checks_the_project(vertex):
    response = gemini(vertex, {"contents": CONTENTS}, path=GEMINI.replace("proj-1", "proj-2"))
    assert (response.status_code, response.json()["error"]["status"]) == (403, "PERMISSION_DENIED")


def test_vertex_accepts_tokens_from_a_separate_token_server(providers, tmp_path):
    token_port = free_port()
    account = google_token.write_service_account(tmp_path / "key.json", f"http://127.0.0.1:{token_port}/token")
    token_server = providers("google_token", "google-token", "--service-account", str(tmp_path / "key.json"),
                             "--token-secret", "shared", port=token_port)
    token_server.account = account
    vertex_server = providers("vertex", "vertex-split", "--token-secret", "shared")
    assert gemini(vertex_server, {"contents": CONTENTS}, token=access_token(token_server)).status_code == 200
    other_secret = providers("vertex", "vertex-other", "--token-secret", "not-shared")
    assert gemini(other_secret, {"contents": CONTENTS}, token=access_token(token_server)).status_code == 401


def test_vertex_text_embeddings(vertex):
    path = GEMINI.replace("gemini-2.0-flash-001", "text-embedding-005")
    body = gemini(vertex, {"instances": [{"content": "two words"}], "parameters": {"outputDimensionality": 64}},
                  method="predict", path=path).json()
    embedding = body["predictions"][0]["embeddings"]
    assert (len(embedding["values"]), embedding["statistics"]["token_count"]) == (64, 2)


VERTEX_CLAUDE = "/v1/projects/proj-1/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514"


def anthropic_vertex(server):
    return anthropic.AnthropicVertex(region="us-east5", project_id="proj-1", access_token=access_token(server),
                                     base_url=f"{server.base_url}/v1", max_retries=0)


def test_vertex_anthropic_through_the_official_sdk(vertex):
    client = anthropic_vertex(vertex)
    message = client.messages.create(model="claude-sonnet-4@20250514", max_tokens=64,
                                     messages=[{"role": "user", "content": "say hello"}])
    assert message.content[0].text == "Hello from vertex-a"
    recorded = [r for r in vertex.recorded() if r["path"].endswith(":rawPredict")][-1]
    assert recorded["path"] == f"{VERTEX_CLAUDE}:rawPredict"
    # The SDK names its own dated API version rather than "vertex-2023-10-16"; both are accepted.
    assert recorded["body"]["anthropic_version"] == anthropic._constants.ANTHROPIC_API_VERSION
    assert "model" not in recorded["body"]
    with client.messages.stream(model="claude-sonnet-4@20250514", max_tokens=64,
                                messages=[{"role": "user", "content": "say hello"}]) as stream:
        assert "".join(stream.text_stream) == "Hello from vertex-a"
    tool = client.messages.create(model="claude-sonnet-4@20250514", max_tokens=64,
                                  tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
                                  messages=[{"role": "user", "content": "weather?"}])
    assert (tool.stop_reason, tool.content[0].input) == ("tool_use", {"city": "Paris"})


def test_vertex_anthropic_refuses_bad_bodies(vertex):
    token = access_token(vertex)
    for body, fragment in (
            ({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
             "anthropic_version must be 'vertex-2023-10-16'"),
            ({"anthropic_version": "vertex-2023-10-16", "model": "claude", "max_tokens": 5,
              "messages": [{"role": "user", "content": "x"}]}, "unknown field 'model'"),
            ({"anthropic_version": "vertex-2023-10-16", "max_tokens": 5,
              "messages": [{"role": "assistant", "content": "x"}]}, "first message")):
        response = requests.post(f"{vertex.base_url}{VERTEX_CLAUDE}:rawPredict", json=body,
                                 headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert fragment in response.json()["error"]["message"]
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.AnthropicVertex(region="us-east5", project_id="proj-1", access_token="ya29.forged",
                                  base_url=f"{vertex.base_url}/v1", max_retries=0).messages.create(
            model="claude-sonnet-4@20250514", max_tokens=5, messages=[{"role": "user", "content": "x"}])


# ---------------------------------------------------------------------------------------------
# Cohere

@pytest.fixture(scope="module")
def cohere(tmp_path_factory):
    server = start(tmp_path_factory, "cohere", "cohere-a", "--api-key", COHERE_KEY)
    yield server
    server.stop()


def cohere_post(server, path, body, key=COHERE_KEY):
    return requests.post(f"{server.base_url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10)


COHERE_MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is the weather"}]
COHERE_TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


def cohere_events(response):
    events = []
    for block in response.text.split("\n\n"):
        if block:
            event_line, data_line = block.split("\n")
            data = json.loads(data_line.removeprefix("data: "))
            assert event_line == f"event: {data['type']}"
            events.append(data)
    return events


def test_cohere_chat(cohere):
    body = cohere_post(cohere, "/v2/chat", {"model": "command-r-plus", "messages": COHERE_MESSAGES,
                                            "temperature": 0.3, "p": 0.9, "k": 40}).json()
    assert body["message"] == {"role": "assistant", "content": [{"type": "text", "text": "Hello from cohere-a"}]}
    assert body["finish_reason"] == "COMPLETE"
    assert body["usage"] == {"billed_units": {"input_tokens": 6, "output_tokens": 3},
                             "tokens": {"input_tokens": 14, "output_tokens": 3}}


def test_cohere_stream_and_tool_calls(cohere):
    text = cohere_events(cohere_post(cohere, "/v2/chat", {"model": "command-r", "messages": COHERE_MESSAGES,
                                                          "stream": True}))
    assert [e["type"] for e in text] == ["message-start", "content-start", "content-delta", "content-delta",
                                         "content-delta", "content-end", "message-end"]
    assert "".join(e["delta"]["message"]["content"]["text"] for e in text if e["type"] == "content-delta") == \
        "Hello from cohere-a"
    assert text[-1]["delta"]["finish_reason"] == "COMPLETE"
    calls = cohere_events(cohere_post(cohere, "/v2/chat", {"model": "command-r", "messages": COHERE_MESSAGES,
                                                           "tools": COHERE_TOOLS, "stream": True}))
    assert [e["type"] for e in calls] == ["message-start", "tool-plan-delta", "tool-call-start", "tool-call-delta",
                                          "tool-call-delta", "tool-call-end", "message-end"]
    assert json.loads("".join(e["delta"]["message"]["tool_calls"]["function"]["arguments"]
                              for e in calls if e["type"] == "tool-call-delta")) == {"city": "Paris"}
    assert calls[-1]["delta"]["finish_reason"] == "TOOL_CALL"
    first = cohere_post(cohere, "/v2/chat", {"model": "command-r", "messages": COHERE_MESSAGES,
                                             "tools": COHERE_TOOLS}).json()
    call = first["message"]["tool_calls"][0]
    answered = cohere_post(cohere, "/v2/chat", {"model": "command-r", "tools": COHERE_TOOLS, "messages": [
        *COHERE_MESSAGES, first["message"], {"role": "tool", "tool_call_id": call["id"], "content": "21 degrees"}]})
    assert answered.json()["message"]["content"][0]["text"] == "Hello from cohere-a"


@pytest.mark.parametrize("change, fragment", [
    ({"foo": 1}, "unknown field 'foo'"),
    ({"top_p": 0.5}, "unknown field 'top_p'"),
    ({"p": 1.0}, "p must be at most 0.99"),
    ({"messages": [{"role": "developer", "content": "x"}]}, "role must be one of"),
    ({"messages": [{"role": "tool", "tool_call_id": "c1", "content": "x"}]}, "answers no tool call"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "user", "content": "next"}]}, "have no tool message"),
    ({"tools": [{"type": "function", "function": {"name": "f", "strict": True}}]}, "unknown field 'strict'"),
    ({"tool_choice": "AUTO", "tools": COHERE_TOOLS}, "tool_choice must be REQUIRED or NONE"),
    ({"response_format": {"type": "json_schema"}}, "response_format.type"),
])
def test_cohere_refuses_what_cohere_refuses(cohere, change, fragment):
    response = cohere_post(cohere, "/v2/chat", {"model": "command-r", "messages": COHERE_MESSAGES, **change})
    assert response.status_code == 400, response.text
    assert fragment in response.json()["message"]


def test_cohere_needs_the_api_key(cohere):
    response = cohere_post(cohere, "/v2/chat", {"model": "command-r", "messages": COHERE_MESSAGES}, key="other")
    assert response.status_code == 401 and response.json()["message"]


def test_cohere_rerank_and_embed(cohere):
    ranked = cohere_post(cohere, "/v2/rerank", {"model": "rerank-v3.5", "query": "weather in paris", "top_n": 2,
                                                "documents": ["cats sleep", "paris weather today", "weather report"]})
    assert [r["index"] for r in ranked.json()["results"]] == [1, 2]
    assert cohere_post(cohere, "/v2/rerank", {"model": "rerank-v3.5", "query": "q",
                                              "documents": [{"text": "yaml"}]}).status_code == 400
    embedded = cohere_post(cohere, "/v2/embed", {"model": "embed-v4.0", "input_type": "search_document",
                                                 "texts": ["a b", "c"], "embedding_types": ["float", "int8"]}).json()
    assert len(embedded["embeddings"]["float"]) == 2 and len(embedded["embeddings"]["int8"][0]) == 1024
    assert cohere_post(cohere, "/v2/embed", {"model": "embed-v4.0", "texts": ["a"]}).status_code == 400


# ---------------------------------------------------------------------------------------------
# Entra ID

@pytest.fixture(scope="module")
def entra(tmp_path_factory):
    server = start(tmp_path_factory, "entra_token", "entra", "--tenant", "tenant-1", "--client-id", "app-1",
                   "--client-secret", "app-secret")
    yield server
    server.stop()


def entra_grant(server, tenant="tenant-1", **changes):
    form = {"grant_type": "client_credentials", "client_id": "app-1", "client_secret": "app-secret",
            "scope": "https://cognitiveservices.azure.com/.default", **changes}
    return requests.post(f"{server.base_url}/{tenant}/oauth2/v2.0/token", data=form, timeout=10)


def test_entra_client_credentials(entra):
    body = entra_grant(entra).json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0
    assert body["access_token"] in [t["access_token"] for t in requests.get(f"{entra.base_url}/tokens", timeout=10).json()]
    for response, status, error in (
            (entra_grant(entra, client_secret="wrong"), 401, "invalid_client"),
            (entra_grant(entra, client_id="app-2"), 400, "unauthorized_client"),
            (entra_grant(entra, scope="https://management.azure.com/.default"), 400, "invalid_scope"),
            (entra_grant(entra, grant_type="password"), 400, "unsupported_grant_type"),
            (entra_grant(entra, tenant="tenant-2"), 400, "invalid_request")):
        assert (response.status_code, response.json()["error"]) == (status, error)
        assert response.json()["error_description"].startswith("AADSTS")


# ---------------------------------------------------------------------------------------------
# No malformed body crashes a server: each answers 200 or a 400 in its own shape.

def mutations(value, path=()):
    """(path, replacement) for every node of a JSON value, each replaced by values of other types."""
    for wrong in (None, 7, "x", "", [], {}, [{}], {"type": None}):
        yield path, wrong
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from mutations(child, (*path, key))


def mutated(body, path, replacement):
    body = json.loads(json.dumps(body))
    if not path:
        return replacement
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = replacement
    return body


def assert_never_crashes(post, body):
    for path, replacement in mutations(body):
        try:
            response = post(mutated(body, path, replacement))
        except requests.ConnectionError as err:
            raise AssertionError(f"the server dropped the request with {path} = {replacement!r}") from err
        assert response.status_code in (200, 400), (path, replacement, response.status_code, response.text)


def test_malformed_bodies_never_crash_the_servers(bedrock, vertex, cohere):
    assert_never_crashes(lambda b: signed_post(bedrock, f"/model/{CLAUDE}/converse", b), {
        "messages": [*USER, {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather",
                                                                           "input": {"city": "Paris"}}}]},
                     {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "sunny"}]}}]}],
        "system": [{"text": "be brief"}, {"cachePoint": {"type": "default"}}],
        "inferenceConfig": {"maxTokens": 5, "stopSequences": ["x"]},
        "toolConfig": {"tools": [WEATHER_SPEC], "toolChoice": {"auto": {}}}})
    image = base64.b64encode(b"\x89PNG fake").decode()
    assert_never_crashes(lambda b: signed_post(bedrock, f"/model/{CLAUDE}/converse", b), {"messages": [
        {"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": image}}},
                                     {"document": {"format": "txt", "name": "n", "source": {"bytes": image}}}]}]})
    assert_never_crashes(lambda b: signed_post(bedrock, f"/model/{CLAUDE}/invoke", b), {
        **ANTHROPIC_BODY, "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": {"type": "auto"},
        "messages": [
            {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                      "data": image}}, {"type": "text", "text": "q"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                          "content": [{"type": "text", "text": "r"}]}]}]})
    token = access_token(vertex)
    assert_never_crashes(lambda b: gemini(vertex, b, token=token), {
        "contents": [{"role": "user", "parts": [{"text": "see"}, {"inlineData": {"mimeType": "image/png", "data": image}}]},
                     {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
                     {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 1}}}]}],
        "tools": FUNCTIONS, "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
        "generationConfig": {"responseMimeType": "application/json", "responseSchema": {"type": "OBJECT", "properties": {
            "a": {"type": "STRING"}}}, "stopSequences": ["x"]},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]})
    assert_never_crashes(lambda b: cohere_post(cohere, "/v2/chat", b), {
        "model": "command-r", "tools": COHERE_TOOLS, "response_format": {"type": "json_object"},
        "messages": [*COHERE_MESSAGES, {"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "sunny"}]}]})
