#!/usr/bin/env python3
"""Strict fake AWS Bedrock runtime: Converse, ConverseStream, InvokeModel and
InvokeModelWithResponseStream, for aixds's translation tests.

    python e2e/providers/bedrock.py --id bedrock-a --access-key-id AKID --secret-access-key SECRET \\
        [--session-token TOKEN] [--region us-east-1] [--record requests.jsonl]

(the keys default to $AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY and $AWS_SESSION_TOKEN).

Every request must carry a SigV4 signature for service `bedrock` in the server's region, which
the server recomputes with botocore's signer over the headers the request says it signed; a
missing, unknown, mis-scoped, stale (over 5 minutes off) or wrong signature is a 403 in
Bedrock's error shape (`{"message": ...}` and an `x-amzn-ErrorType` header). Then
`POST /model/{modelId}/converse` (and `/converse-stream`) validates the body against the
documented Converse schema (unknown fields, role order, blank text, unanswered toolUse, toolUse
without toolConfig, ... are a 400 ValidationException); `/invoke` (and
`/invoke-with-response-stream`) takes, for an Anthropic model id (`anthropic.` or `.anthropic.`
in it), Anthropic's Messages body without `model` and with `anthropic_version:
"bedrock-2023-05-31"` (or a dated API version, as the anthropic SDK sends), and for `amazon.titan-embed-text-*` a Titan embedding body.
`/count-tokens` takes `{"input": {"invokeModel": {"body": <base64 of an InvokeModel body>}}}`
for a bare Anthropic foundation-model id (an inference profile is refused, as Bedrock refuses
it) and answers `{"inputTokens": n}`.

Replies say "Hello from <id>" (three stream pieces), call the tool that `toolChoice` names or the
first tool offered until the last message carries a tool result (input {"city": "Paris"}), stop
for `maxTokens` (counted in pieces) and `stopSequences`, and count input tokens as words. Prompt
caching: the first request with a `cachePoint` writes the prompt up to it, the same prefix later
reads it. Streams use the AWS event-stream binary framing, each frame written in pieces cut at
awkward places (see fakeserver.SplitWriter), and carry a `p` padding field as Bedrock does.

Knobs in the model id: `fail-NNN` answers that status in Bedrock's error shape (as
`--fail-status` does for every request), `guardrail` stops with guardrail_intervened,
`filtered` with content_filtered, and `stream-error` ends a stream after its first text with a
modelStreamErrorException frame.
"""

import base64
import binascii
import datetime
import hashlib
import hmac
import json
import os
import re
import struct
import time
import uuid
import zlib
from urllib.parse import unquote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

import anthropic_messages
from fakeserver import (
    TOOL_ARGUMENTS, Handler, Invalid, PromptCache, Refused, check_bool, check_int, check_keys,
    check_list, check_number, check_object, check_one_of, check_string, compose_reply, embedding_vector,
    parser, serve, words,
)

ANTHROPIC_VERSION = "bedrock-2023-05-31"
ROUTE = re.compile(r"^/model/([^/]+)/(converse|converse-stream|invoke|invoke-with-response-stream|count-tokens)$")
AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request,\s*"
    r"SignedHeaders=([a-z0-9;_.-]+),\s*Signature=([0-9a-f]{64})$")
MAX_SKEW = datetime.timedelta(minutes=5)
ERROR_TYPES = {400: "ValidationException", 403: "AccessDeniedException", 404: "ResourceNotFoundException",
               408: "ModelTimeoutException", 424: "ModelErrorException", 429: "ThrottlingException",
               500: "InternalServerException", 503: "ServiceUnavailableException"}
STOP_REASONS = {"end": "end_turn", "max_tokens": "max_tokens", "stop_sequence": "stop_sequence", "tool": "tool_use"}

TOP_LEVEL = {"messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig",
             "additionalModelRequestFields", "additionalModelResponseFieldPaths", "promptVariables",
             "requestMetadata", "performanceConfig"}
CONTENT_BLOCKS = ("text", "image", "document", "video", "toolUse", "toolResult", "guardContent",
                  "cachePoint", "reasoningContent", "citationsContent")
IMAGE_FORMATS = ("gif", "jpeg", "png", "webp")
DOCUMENT_FORMATS = ("csv", "doc", "docx", "html", "md", "pdf", "txt", "xls", "xlsx")
VIDEO_FORMATS = ("flv", "mkv", "mov", "mp4", "mpeg", "mpg", "three_gp", "webm", "wmv")
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
TOOL_USE_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
DOCUMENT_NAME = re.compile(r"^[a-zA-Z0-9\-()\[\]]+( [a-zA-Z0-9\-()\[\]]+)*$")
TITAN_DIMENSIONS = (256, 512, 1024)


def bedrock_error(status, kind, message):
    return Refused(status, {"message": message}, {"x-amzn-ErrorType": kind})


def event_message(headers, payload):
    """One AWS event-stream message: prelude (total length, headers length, CRC32 of both),
    string-typed headers, payload, CRC32 of everything before it."""
    encoded = b"".join(
        bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value.encode())) + value.encode()
        for name, value in headers.items())
    prelude = struct.pack(">II", 16 + len(encoded) + len(payload), len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event(event_type, data, index):
    """An event frame whose JSON payload carries Bedrock's `p` padding (its length varies)."""
    padded = {**data, "p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123"[:5 + 7 * index % 40]}
    return event_message({":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
                         json.dumps(padded).encode())


def exception_frame(exception_type, message):
    return event_message({":exception-type": exception_type, ":content-type": "application/json",
                          ":message-type": "exception"}, json.dumps({"message": message}).encode())


class ExactSigV4(SigV4Auth):
    """botocore's SigV4 signer over exactly the headers a request names as signed (botocore's own
    signing leaves out a few, such as user-agent, that a request may still have signed)."""

    def headers_to_sign(self, request):
        signed = HTTPHeaders()
        for name, value in request.headers.items():
            signed[name.lower()] = value
        return signed


class BedrockHandler(Handler):
    server_version = "fake-bedrock"

    def send_json(self, status, obj, headers=None):
        super().send_json(status, obj, {"x-amzn-RequestId": str(uuid.uuid4()), **(headers or {})})

    def handle_get(self, path, query):
        raise bedrock_error(404, "UnknownOperationException", f"no operation at GET {path}")

    def handle_post(self, path, query, raw):
        route = ROUTE.match(path)
        if not route:
            raise bedrock_error(404, "UnknownOperationException", f"no operation at POST {path}")
        self.verify_signature(raw)
        model_id, operation = unquote(route.group(1)), route.group(2)
        status = self.failure(model_id)
        if status:
            raise bedrock_error(status, ERROR_TYPES.get(status, "InternalServerException"),
                                f"simulated failure {status} from {self.server.upstream_id}")
        try:
            body = self.parse_json_object(raw)
            if operation == "count-tokens":
                self.send_json(200, {"inputTokens": count_tokens(body, model_id)})
                return
            if operation.startswith("converse"):
                validate_converse(body)
            elif is_anthropic(model_id):
                anthropic_messages.validate(body, ANTHROPIC_VERSION, extra_fields=("anthropic_beta",))
            elif model_id.startswith("amazon.titan-embed-text"):
                if operation != "invoke":
                    raise Invalid(f"{model_id} does not stream")
                validate_titan_embedding(body)
            else:
                raise Invalid(f"this fake serves InvokeModel for Anthropic and Titan text embedding models, not {model_id}")
        except Invalid as err:
            raise bedrock_error(400, "ValidationException", f"Malformed input request: {err}") from None
        started = time.monotonic()
        if operation == "converse":
            self.send_json(200, self.converse(body, model_id, started))
        elif operation == "converse-stream":
            self.converse_stream(body, model_id, started)
        elif operation == "invoke" and is_anthropic(model_id):
            message = anthropic_messages.message(body, model_id, self.server.upstream_id, self.server.cache)
            usage = message["usage"]
            self.send_json(200, message, {
                "X-Amzn-Bedrock-Input-Token-Count": str(usage["input_tokens"]),
                "X-Amzn-Bedrock-Output-Token-Count": str(usage["output_tokens"]),
                "X-Amzn-Bedrock-Invocation-Latency": str(elapsed_ms(started))})
        elif operation == "invoke":
            self.send_json(200, titan_embedding(body), {
                "X-Amzn-Bedrock-Input-Token-Count": str(words(body["inputText"]))})
        else:
            self.invoke_stream(body, model_id, started)

    def verify_signature(self, raw):
        """Recomputes the request's SigV4 signature; raises a 403 refusal when it does not match."""
        authorization = self.headers.get("Authorization")
        if not authorization:
            raise bedrock_error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        match = AUTHORIZATION.match(authorization.strip())
        if not match:
            raise bedrock_error(403, "IncompleteSignatureException",
                                "Authorization header is not a well-formed AWS4-HMAC-SHA256 signature")
        access_key, day, region, service, signed, signature = match.groups()
        if access_key != self.server.credentials.access_key:
            raise bedrock_error(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
        if region != self.server.region or service != "bedrock":
            raise bedrock_error(403, "InvalidSignatureException",
                                f"Credential should be scoped to region {self.server.region!r} and service 'bedrock', "
                                f"not {region!r} and {service!r}.")
        names = signed.split(";")
        for required in ("host", "x-amz-date"):
            if required not in names:
                raise bedrock_error(403, "IncompleteSignatureException", f"Signed headers must include {required!r}.")
        missing = [name for name in names if self.headers.get(name) is None]
        if missing:
            raise bedrock_error(403, "IncompleteSignatureException", f"Signed headers are missing: {', '.join(missing)}.")
        amz_date = self.headers["X-Amz-Date"]
        try:
            when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            raise bedrock_error(403, "IncompleteSignatureException", f"X-Amz-Date {amz_date!r} is not YYYYMMDDTHHMMSSZ.") from None
        if not amz_date.startswith(day):
            raise bedrock_error(403, "InvalidSignatureException", "Credential scope date does not match X-Amz-Date.")
        now = datetime.datetime.now(datetime.timezone.utc)
        if abs(now - when) > MAX_SKEW:
            raise bedrock_error(403, "InvalidSignatureException",
                                f"Signature expired: {amz_date} is more than 5 minutes away from now "
                                f"({now.strftime('%Y%m%dT%H%M%SZ')}).")
        token = self.headers.get("X-Amz-Security-Token")
        if token != self.server.credentials.token:
            raise bedrock_error(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
        content_sha = self.headers.get("X-Amz-Content-SHA256")
        if content_sha is not None and content_sha != hashlib.sha256(raw).hexdigest():
            raise bedrock_error(403, "InvalidSignatureException", "X-Amz-Content-SHA256 does not match the body.")
        request = AWSRequest(method=self.command, url=f"http://{self.headers.get('Host', '')}{self.path}", data=raw)
        for name in names:
            for value in self.headers.get_all(name):
                request.headers[name] = value
        request.context["timestamp"] = amz_date
        signer = ExactSigV4(self.server.credentials, "bedrock", self.server.region)
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        if not hmac.compare_digest(expected, signature):
            raise bedrock_error(403, "InvalidSignatureException",
                                "The request signature we calculated does not match the signature you provided.")

    def converse_reply(self, body, model_id):
        config = body.get("inferenceConfig", {})
        answer = compose_reply(self.server.upstream_id, tool=converse_tool(body), max_tokens=config.get("maxTokens"),
                               stop_sequences=config.get("stopSequences", ()))
        reason = STOP_REASONS[answer.finish]
        if answer.finish != "tool" and "guardrail" in model_id:
            reason = "guardrail_intervened"
        elif answer.finish != "tool" and "filtered" in model_id:
            reason = "content_filtered"
        return answer, reason

    def converse(self, body, model_id, started):
        answer, reason = self.converse_reply(body, model_id)
        if answer.tool:
            content = [{"toolUse": {"toolUseId": tool_use_id(), "name": answer.tool, "input": TOOL_ARGUMENTS}}]
        else:
            content = [{"text": answer.text}]
        return {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": reason,
            "usage": converse_usage(body, model_id, answer.output_tokens, self.server.cache),
            "metrics": {"latencyMs": elapsed_ms(started)},
        }

    def converse_stream(self, body, model_id, started):
        answer, reason = self.converse_reply(body, model_id)
        events = [("messageStart", {"role": "assistant"})]
        if answer.tool:
            arguments = json.dumps(TOOL_ARGUMENTS)
            half = len(arguments) // 2
            events.append(("contentBlockStart", {"contentBlockIndex": 0, "start": {
                "toolUse": {"toolUseId": tool_use_id(), "name": answer.tool}}}))
            events.extend(("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": part}}})
                          for part in (arguments[:half], arguments[half:]))
        else:
            events.extend(("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
                          for piece in answer.pieces)
        events.append(("contentBlockStop", {"contentBlockIndex": 0}))
        events.append(("messageStop", {"stopReason": reason}))
        events.append(("metadata", {"usage": converse_usage(body, model_id, answer.output_tokens, self.server.cache),
                                    "metrics": {"latencyMs": elapsed_ms(started)}}))
        self.send_events(events, model_id)

    def invoke_stream(self, body, model_id, started):
        events = anthropic_messages.stream_events(body, model_id, self.server.upstream_id, self.server.cache)
        input_tokens = events[0][1]["message"]["usage"]["input_tokens"]
        output_tokens = events[-2][1]["usage"]["output_tokens"]
        events[-1][1]["amazon-bedrock-invocationMetrics"] = {
            "inputTokenCount": input_tokens, "outputTokenCount": output_tokens,
            "invocationLatency": elapsed_ms(started), "firstByteLatency": elapsed_ms(started)}
        chunks = [("chunk", {"bytes": base64.b64encode(json.dumps(data).encode()).decode()}) for _, data in events]
        self.send_events(chunks, model_id, {"X-Amzn-Bedrock-Content-Type": "application/json"})

    def send_events(self, events, model_id, headers=None):
        writer = self.start_stream("application/vnd.amazon.eventstream",
                                   {"x-amzn-RequestId": str(uuid.uuid4()), **(headers or {})})
        for index, (event_type, data) in enumerate(events):
            writer.send(event(event_type, data, index))
            if "stream-error" in model_id and index == 1:
                writer.send(exception_frame("modelStreamErrorException",
                                            f"simulated stream error from {self.server.upstream_id}"))
                break
        self.end_stream(writer)


def count_tokens(body, model_id):
    """The input tokens of a CountTokens request for an InvokeModel body (`input.invokeModel`)."""
    if not model_id.startswith("anthropic."):
        raise Invalid("The provided model doesn't support counting tokens.")
    check_keys(body, "request", {"input"}, ("input",))
    request = check_object(body["input"], "input")
    check_keys(request, "input", {"invokeModel", "converse"}, ())
    if set(request) != {"invokeModel"}:
        raise Invalid("input must have exactly one of invokeModel and converse; this fake counts invokeModel")
    invoke = check_object(request["invokeModel"], "input.invokeModel")
    check_keys(invoke, "input.invokeModel", {"body"}, ("body",))
    try:
        inner = json.loads(base64.b64decode(check_string(invoke["body"], "input.invokeModel.body"), validate=True))
    except (ValueError, binascii.Error):
        raise Invalid("input.invokeModel.body is not base64 of a JSON object") from None
    if not isinstance(inner, dict):
        raise Invalid("input.invokeModel.body is not base64 of a JSON object")
    anthropic_messages.validate(inner, ANTHROPIC_VERSION, extra_fields=("anthropic_beta",))
    return max(1, sum(anthropic_messages.block_words(b) for b in anthropic_messages.prompt_blocks(inner)))


def is_anthropic(model_id):
    return model_id.startswith("anthropic.") or ".anthropic." in model_id or "/anthropic." in model_id


def tool_use_id():
    return f"tooluse_{uuid.uuid4().hex[:22]}"


def elapsed_ms(started):
    return max(1, round((time.monotonic() - started) * 1000))


def validate_converse(body):
    check_keys(body, "request", TOP_LEVEL, ("messages",))
    tool_names = check_tool_config(body["toolConfig"]) if "toolConfig" in body else None
    uses_tools = check_messages(body["messages"])
    if uses_tools and tool_names is None:
        raise Invalid("The toolConfig field must be defined when using toolUse and toolResult content blocks.")
    for i, block in enumerate(check_list(body.get("system", []), "system")):
        where = f"system.{i}"
        kind = check_one_of(check_object(block, where), where, ("text", "guardContent", "cachePoint"))
        check_block_member(kind, block[kind], where)
    if "inferenceConfig" in body:
        config = check_object(body["inferenceConfig"], "inferenceConfig")
        check_keys(config, "inferenceConfig", {"maxTokens", "temperature", "topP", "stopSequences"})
        if "maxTokens" in config:
            check_int(config["maxTokens"], "inferenceConfig.maxTokens", minimum=1)
        if "temperature" in config:
            check_number(config["temperature"], "inferenceConfig.temperature", 0, 1)
        if "topP" in config:
            check_number(config["topP"], "inferenceConfig.topP", 0, 1)
        for i, sequence in enumerate(check_list(config.get("stopSequences", []), "inferenceConfig.stopSequences")):
            check_string(sequence, f"inferenceConfig.stopSequences.{i}", non_empty=True)
    if "additionalModelRequestFields" in body:
        check_object(body["additionalModelRequestFields"], "additionalModelRequestFields")
    for i, path in enumerate(check_list(body.get("additionalModelResponseFieldPaths", []),
                                        "additionalModelResponseFieldPaths")):
        check_string(path, f"additionalModelResponseFieldPaths.{i}", non_empty=True)
    if "guardrailConfig" in body:
        config = check_object(body["guardrailConfig"], "guardrailConfig")
        check_keys(config, "guardrailConfig", {"guardrailIdentifier", "guardrailVersion", "trace", "streamProcessingMode"},
                   ("guardrailIdentifier", "guardrailVersion"))
    for key, value in check_object(body.get("requestMetadata", {}), "requestMetadata").items():
        check_string(value, f"requestMetadata.{key}")
    for key, value in check_object(body.get("promptVariables", {}), "promptVariables").items():
        check_keys(check_object(value, f"promptVariables.{key}"), f"promptVariables.{key}", {"text"}, ("text",))
    if "performanceConfig" in body:
        config = check_object(body["performanceConfig"], "performanceConfig")
        check_keys(config, "performanceConfig", {"latency"})
        if config.get("latency", "standard") not in ("standard", "optimized"):
            raise Invalid("performanceConfig.latency must be 'standard' or 'optimized'")


def check_tool_config(config):
    """Checks toolConfig; returns the names of its tools."""
    check_object(config, "toolConfig")
    check_keys(config, "toolConfig", {"tools", "toolChoice"}, ("tools",))
    names = []
    for i, tool in enumerate(check_list(config["tools"], "toolConfig.tools", min_items=1)):
        where = f"toolConfig.tools.{i}"
        kind = check_one_of(check_object(tool, where), where, ("toolSpec", "cachePoint", "systemTool"))
        if kind == "cachePoint":
            check_block_member(kind, tool[kind], where)
            continue
        if kind == "systemTool":
            check_keys(check_object(tool[kind], f"{where}.systemTool"), f"{where}.systemTool", {"name"}, ("name",))
            continue
        spec = check_object(tool["toolSpec"], f"{where}.toolSpec")
        check_keys(spec, f"{where}.toolSpec", {"name", "description", "inputSchema", "strict"}, ("name", "inputSchema"))
        if not TOOL_NAME.match(check_string(spec["name"], f"{where}.toolSpec.name")):
            raise Invalid(f"{where}.toolSpec.name must match {TOOL_NAME.pattern}")
        if "description" in spec:
            check_string(spec["description"], f"{where}.toolSpec.description", non_empty=True)
        if "strict" in spec:
            check_bool(spec["strict"], f"{where}.toolSpec.strict")
        schema = check_object(spec["inputSchema"], f"{where}.toolSpec.inputSchema")
        check_keys(schema, f"{where}.toolSpec.inputSchema", {"json"}, ("json",))
        if check_object(schema["json"], f"{where}.toolSpec.inputSchema.json").get("type") != "object":
            raise Invalid(f"{where}.toolSpec.inputSchema.json.type must be 'object'")
        if spec["name"] in names:
            raise Invalid(f"{where}.toolSpec.name: tool names must be unique ({spec['name']!r} repeats)")
        names.append(spec["name"])
    if "toolChoice" in config:
        choice = check_object(config["toolChoice"], "toolConfig.toolChoice")
        kind = check_one_of(choice, "toolConfig.toolChoice", ("auto", "any", "tool"))
        if kind == "tool":
            tool = check_object(choice["tool"], "toolConfig.toolChoice.tool")
            check_keys(tool, "toolConfig.toolChoice.tool", {"name"}, ("name",))
            if tool["name"] not in names:
                raise Invalid(f"toolConfig.toolChoice.tool.name {tool['name']!r} is not one of the tools")
        else:
            check_keys(check_object(choice[kind], f"toolConfig.toolChoice.{kind}"), f"toolConfig.toolChoice.{kind}", set())
    return names


def check_messages(messages):
    """Checks the conversation; returns whether it uses toolUse or toolResult blocks."""
    check_list(messages, "messages", min_items=1)
    pending, uses_tools = [], False
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        check_object(message, where)
        check_keys(message, where, {"role", "content"}, ("role", "content"))
        role = message["role"]
        if role not in ("user", "assistant"):
            raise Invalid(f"{where}.role must be 'user' or 'assistant'")
        if i == 0 and role != "user":
            raise Invalid("A conversation must start with a user message.")
        if i > 0 and role == messages[i - 1].get("role"):
            raise Invalid(f"A conversation must alternate between user and assistant roles ({where} repeats {role!r}).")
        blocks = check_list(message["content"], f"{where}.content")
        if not blocks:
            raise Invalid(f"The content field in the Message object at {where} is empty.")
        results = []
        for j, block in enumerate(blocks):
            block_where = f"{where}.content.{j}"
            kind = check_one_of(check_object(block, block_where), block_where, CONTENT_BLOCKS)
            check_block_member(kind, block[kind], block_where)
            if kind == "toolUse" and role != "assistant":
                raise Invalid(f"{block_where}: toolUse blocks may only appear in assistant messages")
            if kind == "toolResult":
                if role != "user":
                    raise Invalid(f"{block_where}: toolResult blocks may only appear in user messages")
                results.append(block[kind]["toolUseId"])
            uses_tools = uses_tools or kind in ("toolUse", "toolResult")
        if len(results) > len(pending):
            raise Invalid(f"The number of toolResult blocks at {where}.content exceeds the number of toolUse "
                          "blocks of the previous turn.")
        missing = [tool_id for tool_id in pending if tool_id not in results]
        if missing:
            raise Invalid(f"Expected toolResult blocks at {where}.content for the following Ids: {', '.join(missing)}")
        pending = [b["toolUse"]["toolUseId"] for b in blocks if "toolUse" in b]
    return uses_tools


def check_block_member(kind, value, where):
    """Checks the member `kind` of a content (or system or tool) block union."""
    where = f"{where}.{kind}"
    if kind == "text":
        if not check_string(value, where).strip():
            raise Invalid(f"The text field in the ContentBlock object at {where} is blank.")
    elif kind == "cachePoint":
        check_keys(check_object(value, where), where, {"type"}, ("type",))
        if value["type"] != "default":
            raise Invalid(f"{where}.type must be 'default'")
    elif kind == "image":
        check_keys(check_object(value, where), where, {"format", "source"}, ("format", "source"))
        if value["format"] not in IMAGE_FORMATS:
            raise Invalid(f"{where}.format must be one of {', '.join(sorted(IMAGE_FORMATS))}")
        check_source(value["source"], f"{where}.source", ("bytes", "s3Location"))
    elif kind == "document":
        check_keys(check_object(value, where), where, {"format", "name", "source", "context", "citations"},
                   ("name", "source"))
        if value.get("format", "txt") not in DOCUMENT_FORMATS:
            raise Invalid(f"{where}.format must be one of {', '.join(sorted(DOCUMENT_FORMATS))}")
        if not DOCUMENT_NAME.match(check_string(value["name"], f"{where}.name")):
            raise Invalid(f"{where}.name may only hold letters, digits, hyphens, parentheses, square brackets "
                          "and single spaces")
        check_source(value["source"], f"{where}.source", ("bytes", "s3Location", "text", "content"))
    elif kind == "video":
        check_keys(check_object(value, where), where, {"format", "source"}, ("format", "source"))
        if value["format"] not in VIDEO_FORMATS:
            raise Invalid(f"{where}.format must be one of {', '.join(sorted(VIDEO_FORMATS))}")
        check_source(value["source"], f"{where}.source", ("bytes", "s3Location"))
    elif kind == "toolUse":
        check_keys(check_object(value, where), where, {"toolUseId", "name", "input", "type"},
                   ("toolUseId", "name", "input"))
        if not TOOL_USE_ID.match(check_string(value["toolUseId"], f"{where}.toolUseId")):
            raise Invalid(f"{where}.toolUseId must match {TOOL_USE_ID.pattern}")
        if not TOOL_NAME.match(check_string(value["name"], f"{where}.name")):
            raise Invalid(f"{where}.name must match {TOOL_NAME.pattern}")
    elif kind == "toolResult":
        check_keys(check_object(value, where), where, {"toolUseId", "content", "status", "type"},
                   ("toolUseId", "content"))
        if not TOOL_USE_ID.match(check_string(value["toolUseId"], f"{where}.toolUseId")):
            raise Invalid(f"{where}.toolUseId must match {TOOL_USE_ID.pattern}")
        if value.get("status", "success") not in ("success", "error"):
            raise Invalid(f"{where}.status must be 'success' or 'error'")
        for k, part in enumerate(check_list(value["content"], f"{where}.content")):
            part_where = f"{where}.content.{k}"
            member = check_one_of(check_object(part, part_where), part_where,
                                  ("json", "text", "image", "document", "video"))
            if member != "json":
                check_block_member(member, part[member], part_where)
    elif kind == "guardContent":
        member = check_one_of(check_object(value, where), where, ("text", "image"))
        if member == "text":
            check_keys(check_object(value["text"], f"{where}.text"), f"{where}.text", {"text", "qualifiers"}, ("text",))
            check_string(value["text"]["text"], f"{where}.text.text", non_empty=True)
        else:
            check_block_member("image", value["image"], where)
    elif kind == "reasoningContent":
        member = check_one_of(check_object(value, where), where, ("reasoningText", "redactedContent"))
        if member == "reasoningText":
            check_keys(check_object(value[member], f"{where}.reasoningText"), f"{where}.reasoningText",
                       {"text", "signature"}, ("text",))
        else:
            check_base64(value[member], f"{where}.redactedContent")
    elif kind == "citationsContent":
        check_keys(check_object(value, where), where, {"content", "citations"})


def check_source(source, where, members):
    member = check_one_of(check_object(source, where), where, members)
    if member == "bytes":
        check_base64(source["bytes"], f"{where}.bytes")
    elif member == "s3Location":
        check_keys(check_object(source[member], f"{where}.s3Location"), f"{where}.s3Location", {"uri", "bucketOwner"},
                   ("uri",))
    elif member == "text":
        check_string(source[member], f"{where}.text", non_empty=True)
    else:
        check_list(source[member], f"{where}.content", min_items=1)


def check_base64(value, where):
    try:
        if not base64.b64decode(check_string(value, where), validate=True):
            raise Invalid(f"{where} must not be empty")
    except binascii.Error:
        raise Invalid(f"{where} is not valid base64") from None


def converse_tool(body):
    """The tool the fake model calls: the one toolChoice names, else the first toolSpec, unless the
    last message carries a tool result."""
    config = body.get("toolConfig") or {}
    names = [t["toolSpec"]["name"] for t in config.get("tools", []) if "toolSpec" in t]
    if not names or any("toolResult" in block for block in body["messages"][-1]["content"]):
        return None
    choice = config.get("toolChoice", {})
    return choice["tool"]["name"] if "tool" in choice else names[0]


def converse_usage(body, model_id, output_tokens, cache):
    """Converse usage: the prompt's words, of which those up to the last cachePoint are written to
    or read from the cache (then not counted in inputTokens); cache fields only with a cachePoint."""
    blocks = [*body.get("system", []), *(b for m in body["messages"] for b in m["content"])]

    def count(some):
        return sum(words(b["text"]) for b in some if "text" in b and isinstance(b["text"], str))

    total = max(1, count(blocks))
    usage = {"inputTokens": total, "outputTokens": output_tokens, "totalTokens": total + output_tokens}
    marks = [i for i, b in enumerate(blocks) if "cachePoint" in b]
    if marks:
        prefix = blocks[:marks[-1]]
        read, written = cache.account(model_id, prefix, count(prefix))
        usage.update(inputTokens=total - read - written, cacheReadInputTokens=read, cacheWriteInputTokens=written)
    return usage


def validate_titan_embedding(body):
    check_keys(body, "request", {"inputText", "dimensions", "normalize", "embeddingTypes"}, ("inputText",))
    check_string(body["inputText"], "inputText", non_empty=True)
    if "dimensions" in body and check_int(body["dimensions"], "dimensions") not in TITAN_DIMENSIONS:
        raise Invalid(f"dimensions must be one of {', '.join(map(str, TITAN_DIMENSIONS))}")
    if "normalize" in body:
        check_bool(body["normalize"], "normalize")
    for i, kind in enumerate(check_list(body.get("embeddingTypes", []), "embeddingTypes")):
        if kind not in ("float", "binary"):
            raise Invalid(f"embeddingTypes.{i} must be 'float' or 'binary'")


def titan_embedding(body):
    """A deterministic embedding of inputText (the same text always gets the same vector)."""
    vector = embedding_vector(body["inputText"], body.get("dimensions", 1024), body.get("normalize", True))
    return {"embedding": vector, "inputTextTokenCount": words(body["inputText"])}


def main():
    p = parser(__doc__)
    p.add_argument("--access-key-id", default=os.environ.get("AWS_ACCESS_KEY_ID"))
    p.add_argument("--secret-access-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY"))
    p.add_argument("--session-token", default=os.environ.get("AWS_SESSION_TOKEN"),
                   help="the X-Amz-Security-Token requests must carry (none when unset)")
    p.add_argument("--region", default="us-east-1")
    args = p.parse_args()
    if not args.access_key_id or not args.secret_access_key:
        p.error("--access-key-id and --secret-access-key (or $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY) are required")
    serve(BedrockHandler, args, region=args.region, cache=PromptCache(),
          credentials=Credentials(args.access_key_id, args.secret_access_key, args.session_token))


if __name__ == "__main__":
    main()
