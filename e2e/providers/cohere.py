#!/usr/bin/env python3
"""Strict fake Cohere API v2: chat (plain and streamed), rerank and embed, for aixds's
translation tests.

    python e2e/providers/cohere.py --id cohere-a --api-key KEY [--record FILE]

(the key defaults to $COHERE_API_KEY). Every request needs `Authorization: Bearer KEY`, else a
401 in Cohere's error shape (`{"id", "message"}`). `POST /v2/chat` validates the body against the
documented v2 schema (unknown fields anywhere, roles other than system/user/assistant/tool, tool
messages that answer no tool call, tool calls left unanswered, out-of-range sampling values, ...:
400); `POST /v2/rerank` takes model, query, documents (strings), top_n and max_tokens_per_doc;
`POST /v2/embed` takes model, input_type, texts (or images, or inputs), embedding_types,
truncate, output_dimension and max_tokens.

Chat replies say "Hello from <id>" (three stream pieces), call the first tool offered (with a
tool plan, arguments {"city": "Paris"}) until the last message is a tool result (none for
`tool_choice: NONE`), stop for `max_tokens` (counted in pieces) and `stop_sequences`, answer JSON
that fits `response_format.json_schema` for `json_object`, and bill input tokens as words
(`usage.tokens` adds 4 per message for the chat template). Streams are SSE with an `event:` line
per event, as v2 sends them, written in pieces cut at awkward places.

Knobs in the model name: `fail-NNN` answers that status (as `--fail-status` does for every
request) and `finish-error` ends the reply with finish_reason ERROR.
"""

import base64
import json
import os
import struct
import uuid

from fakeserver import (
    TOOL_ARGUMENTS, Handler, Invalid, Refused, check_bool, check_int, check_keys, check_list, check_number,
    check_object, check_string, compose_reply, embedding_vector, parser, sample_for_schema, serve, words,
)

CHAT = {"model", "messages", "stream", "tools", "strict_tools", "documents", "citation_options", "response_format",
        "safety_mode", "max_tokens", "stop_sequences", "temperature", "seed", "frequency_penalty", "presence_penalty",
        "k", "p", "logprobs", "tool_choice", "thinking", "priority"}
FINISH = {"end": "COMPLETE", "max_tokens": "MAX_TOKENS", "stop_sequence": "STOP_SEQUENCE", "tool": "TOOL_CALL"}
INPUT_TYPES = ("classification", "clustering", "image", "search_document", "search_query")
EMBEDDING_TYPES = ("base64", "binary", "float", "int8", "ubinary", "uint8")
TEMPLATE_TOKENS_PER_MESSAGE = 4


def cohere_error(status, message):
    return Refused(status, {"id": str(uuid.uuid4()), "message": message})


def validate_chat(body):
    check_keys(body, "request", CHAT, ("model", "messages"))
    check_string(body["model"], "model", non_empty=True)
    if "stream" in body:
        check_bool(body["stream"], "stream")
    if "max_tokens" in body:
        check_int(body["max_tokens"], "max_tokens", minimum=1)
    if "temperature" in body:
        check_number(body["temperature"], "temperature", minimum=0)
    if "p" in body:
        check_number(body["p"], "p", 0.01, 0.99)
    if "k" in body:
        check_int(body["k"], "k", 0, 500)
    for key in ("frequency_penalty", "presence_penalty"):
        if key in body:
            check_number(body[key], key, 0, 1)
    if "seed" in body:
        check_int(body["seed"], "seed")
    for key in ("logprobs", "strict_tools"):
        if key in body:
            check_bool(body[key], key)
    sequences = check_list(body.get("stop_sequences", []), "stop_sequences")
    if len(sequences) > 5:
        raise Invalid("stop_sequences may hold at most 5 sequences")
    for i, sequence in enumerate(sequences):
        check_string(sequence, f"stop_sequences[{i}]", non_empty=True)
    if body.get("safety_mode", "CONTEXTUAL") not in ("CONTEXTUAL", "STRICT", "OFF"):
        raise Invalid("safety_mode must be CONTEXTUAL, STRICT or OFF")
    names = check_tools(body.get("tools"))
    if "tool_choice" in body:
        if body["tool_choice"] not in ("REQUIRED", "NONE"):
            raise Invalid("tool_choice must be REQUIRED or NONE")
        if not names:
            raise Invalid("tool_choice needs tools")
    if "response_format" in body:
        check_response_format(body["response_format"])
    if "citation_options" in body:
        options = check_object(body["citation_options"], "citation_options")
        check_keys(options, "citation_options", {"mode"})
    if "thinking" in body:
        thinking = check_object(body["thinking"], "thinking")
        check_keys(thinking, "thinking", {"type", "token_budget"}, ("type",))
        if thinking["type"] not in ("enabled", "disabled"):
            raise Invalid("thinking.type must be enabled or disabled")
    for i, document in enumerate(check_list(body.get("documents", []), "documents")):
        if not isinstance(document, str):
            check_keys(check_object(document, f"documents[{i}]"), f"documents[{i}]", {"id", "data"}, ("data",))
    check_messages(body["messages"])


def check_tools(tools):
    if tools is None:
        return []
    names = []
    for i, tool in enumerate(check_list(tools, "tools")):
        where = f"tools[{i}]"
        check_keys(check_object(tool, where), where, {"type", "function"}, ("type", "function"))
        if tool["type"] != "function":
            raise Invalid(f"{where}.type must be 'function'")
        function = check_object(tool["function"], f"{where}.function")
        check_keys(function, f"{where}.function", {"name", "description", "parameters"}, ("name",))
        check_string(function["name"], f"{where}.function.name", non_empty=True)
        if "description" in function:
            check_string(function["description"], f"{where}.function.description")
        if "parameters" in function:
            check_object(function["parameters"], f"{where}.function.parameters")
        names.append(function["name"])
    return names


def check_response_format(response_format):
    check_object(response_format, "response_format")
    kind = response_format.get("type")
    if kind == "text":
        check_keys(response_format, "response_format", {"type"})
    elif kind == "json_object":
        check_keys(response_format, "response_format", {"type", "json_schema"})
        if "json_schema" in response_format:
            check_object(response_format["json_schema"], "response_format.json_schema")
    else:
        raise Invalid("response_format.type must be 'text' or 'json_object'")


def check_messages(messages):
    check_list(messages, "messages", min_items=1)
    open_calls = set()
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        check_object(message, where)
        role = message.get("role")
        if role == "tool":
            check_keys(message, where, {"role", "tool_call_id", "content"}, ("tool_call_id", "content"))
            if check_string(message["tool_call_id"], f"{where}.tool_call_id") not in open_calls:
                raise Invalid(f"{where}.tool_call_id {message['tool_call_id']!r} answers no tool call of the "
                              "assistant message before it")
            open_calls.discard(message["tool_call_id"])
            check_content(message["content"], f"{where}.content", {"text", "document"})
            continue
        if open_calls:
            raise Invalid(f"{where}: tool calls {', '.join(sorted(open_calls))} have no tool message answering them")
        if role in ("system", "user"):
            check_keys(message, where, {"role", "content"}, ("content",))
            check_content(message["content"], f"{where}.content", {"text"} if role == "system" else {"text", "image_url"})
        elif role == "assistant":
            check_keys(message, where, {"role", "content", "tool_calls", "tool_plan", "citations"})
            if "content" not in message and not message.get("tool_calls"):
                raise Invalid(f"{where}: an assistant message needs content or tool_calls")
            if "content" in message:
                check_content(message["content"], f"{where}.content", {"text", "thinking"})
            if "tool_plan" in message:
                check_string(message["tool_plan"], f"{where}.tool_plan")
            open_calls = check_tool_calls(message.get("tool_calls", []), f"{where}.tool_calls")
        else:
            raise Invalid(f"{where}.role must be one of system, user, assistant, tool (not {role!r})")
    if open_calls:
        raise Invalid(f"tool calls {', '.join(sorted(open_calls))} have no tool message answering them")


def check_content(content, where, kinds):
    if isinstance(content, str):
        if not content.strip():
            raise Invalid(f"{where} must not be empty")
        return
    for i, part in enumerate(check_list(content, where, min_items=1)):
        part_where = f"{where}[{i}]"
        check_object(part, part_where)
        kind = part.get("type")
        if not isinstance(kind, str) or kind not in kinds:
            raise Invalid(f"{part_where}.type must be one of {', '.join(sorted(kinds))} (not {kind!r})")
        if kind == "text":
            check_keys(part, part_where, {"type", "text"}, ("text",))
            check_string(part["text"], f"{part_where}.text", non_empty=True)
        elif kind == "thinking":
            check_keys(part, part_where, {"type", "thinking"}, ("thinking",))
        elif kind == "image_url":
            check_keys(part, part_where, {"type", "image_url"}, ("image_url",))
            image = check_object(part["image_url"], f"{part_where}.image_url")
            check_keys(image, f"{part_where}.image_url", {"url", "detail"}, ("url",))
            check_string(image["url"], f"{part_where}.image_url.url", non_empty=True)
        else:
            check_keys(part, part_where, {"type", "document"}, ("document",))
            document = check_object(part["document"], f"{part_where}.document")
            check_keys(document, f"{part_where}.document", {"id", "data"}, ("data",))


def check_tool_calls(calls, where):
    """Checks an assistant's tool calls; returns their ids."""
    ids = set()
    for i, call in enumerate(check_list(calls, where)):
        call_where = f"{where}[{i}]"
        check_keys(check_object(call, call_where), call_where, {"id", "type", "function"}, ("id", "type", "function"))
        check_string(call["id"], f"{call_where}.id", non_empty=True)
        if call["type"] != "function":
            raise Invalid(f"{call_where}.type must be 'function'")
        function = check_object(call["function"], f"{call_where}.function")
        check_keys(function, f"{call_where}.function", {"name", "arguments"}, ("name", "arguments"))
        check_string(function["name"], f"{call_where}.function.name", non_empty=True)
        try:
            json.loads(check_string(function["arguments"], f"{call_where}.function.arguments"))
        except ValueError:
            raise Invalid(f"{call_where}.function.arguments must be a JSON string") from None
        ids.add(call["id"])
    return ids


def content_texts(content):
    if isinstance(content, str):
        return [content]
    return [p["text"] for p in content if p.get("type") == "text"]


def tool_to_call(body):
    tools = body.get("tools") or []
    if not tools or body.get("tool_choice") == "NONE" or body["messages"][-1]["role"] == "tool":
        return None
    return tools[0]["function"]["name"]


class CohereHandler(Handler):
    server_version = "fake-cohere"

    def handle_get(self, path, query):
        raise cohere_error(404, f"no route for GET {path}")

    def handle_post(self, path, query, raw):
        if path not in ("/v2/chat", "/v2/rerank", "/v2/embed"):
            raise cohere_error(404, f"no route for POST {path}")
        if self.headers.get("Authorization", "") != f"Bearer {self.server.api_key}":
            raise cohere_error(401, "invalid api token")
        try:
            body = self.parse_json_object(raw)
            status = self.failure(str(body.get("model", "")))
            if status:
                raise cohere_error(status, f"simulated failure {status} from {self.server.upstream_id}")
            {"/v2/chat": validate_chat, "/v2/rerank": validate_rerank, "/v2/embed": validate_embed}[path](body)
        except Invalid as err:
            raise cohere_error(400, f"invalid request: {err}") from None
        if path == "/v2/rerank":
            self.send_json(200, rerank(body))
        elif path == "/v2/embed":
            self.send_json(200, embed(body))
        elif body.get("stream"):
            self.chat_stream(body)
        else:
            self.send_json(200, self.chat(body))

    def reply(self, body):
        text = None
        response_format = body.get("response_format", {})
        if response_format.get("type") == "json_object":
            text = json.dumps(sample_for_schema(response_format.get("json_schema"), self.server.upstream_id))
        answer = compose_reply(self.server.upstream_id, tool=tool_to_call(body), max_tokens=body.get("max_tokens"),
                               stop_sequences=body.get("stop_sequences", ()), text=text)
        finish = "ERROR" if "finish-error" in body["model"] else FINISH[answer.finish]
        return answer, finish, self.usage(body, answer.output_tokens)

    def usage(self, body, output_tokens):
        texts = [t for m in body["messages"] for t in content_texts(m.get("content", []))]
        billed = max(1, sum(words(t) for t in texts))
        return {"billed_units": {"input_tokens": billed, "output_tokens": output_tokens},
                "tokens": {"input_tokens": billed + TEMPLATE_TOKENS_PER_MESSAGE * len(body["messages"]),
                           "output_tokens": output_tokens}}

    def chat(self, body):
        answer, finish, usage = self.reply(body)
        message = {"role": "assistant"}
        if answer.tool:
            message["tool_plan"] = f"I will call {answer.tool}."
            message["tool_calls"] = [{"id": call_id(answer.tool), "type": "function",
                                      "function": {"name": answer.tool, "arguments": json.dumps(TOOL_ARGUMENTS)}}]
        else:
            message["content"] = [{"type": "text", "text": answer.text}]
        return {"id": str(uuid.uuid4()), "message": message, "finish_reason": finish, "usage": usage}

    def chat_stream(self, body):
        answer, finish, usage = self.reply(body)
        events = [{"id": str(uuid.uuid4()), "type": "message-start", "delta": {"message": {
            "role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}}]
        if answer.tool:
            arguments = json.dumps(TOOL_ARGUMENTS)
            half = len(arguments) // 2
            events.append({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": f"I will call {answer.tool}."}}})
            events.append({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": {
                "id": call_id(answer.tool), "type": "function", "function": {"name": answer.tool, "arguments": ""}}}}})
            events.extend({"type": "tool-call-delta", "index": 0, "delta": {"message": {"tool_calls": {
                "function": {"arguments": part}}}}} for part in (arguments[:half], arguments[half:]))
            events.append({"type": "tool-call-end", "index": 0})
        else:
            events.append({"type": "content-start", "index": 0, "delta": {"message": {"content": {
                "type": "text", "text": ""}}}})
            events.extend({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": piece}}}}
                          for piece in answer.pieces)
            events.append({"type": "content-end", "index": 0})
        events.append({"type": "message-end", "delta": {"finish_reason": finish, "usage": usage}})
        writer = self.start_stream("text/event-stream", {"Cache-Control": "no-cache"})
        for event in events:
            writer.send(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        self.end_stream(writer)


def call_id(name):
    return f"{name}_{uuid.uuid4().hex[:8]}"


def validate_rerank(body):
    check_keys(body, "request", {"model", "query", "documents", "top_n", "max_tokens_per_doc", "priority"},
               ("model", "query", "documents"))
    check_string(body["model"], "model", non_empty=True)
    check_string(body["query"], "query", non_empty=True)
    for i, document in enumerate(check_list(body["documents"], "documents", min_items=1)):
        check_string(document, f"documents[{i}]")
    if len(body["documents"]) > 1000:
        raise Invalid("documents may hold at most 1000 documents")
    if "top_n" in body:
        check_int(body["top_n"], "top_n", minimum=1)
    if "max_tokens_per_doc" in body:
        check_int(body["max_tokens_per_doc"], "max_tokens_per_doc", minimum=1)


def rerank(body):
    """Documents ranked by the share of the query's words they contain (ties keep their order)."""
    query = set(body["query"].lower().split())

    def score(document):
        return round(len(query & set(document.lower().split())) / max(1, len(query)), 6)

    ranked = sorted(range(len(body["documents"])), key=lambda i: -score(body["documents"][i]))
    results = [{"index": i, "relevance_score": score(body["documents"][i])} for i in ranked[:body.get("top_n")]]
    return {"id": str(uuid.uuid4()), "results": results,
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}}


def validate_embed(body):
    check_keys(body, "request", {"model", "input_type", "texts", "images", "inputs", "embedding_types", "truncate",
                                 "output_dimension", "max_tokens", "priority"}, ("model", "input_type"))
    check_string(body["model"], "model", non_empty=True)
    if body["input_type"] not in INPUT_TYPES:
        raise Invalid(f"input_type must be one of {', '.join(sorted(INPUT_TYPES))}")
    given = [key for key in ("texts", "images", "inputs") if key in body]
    if len(given) != 1:
        raise Invalid("give exactly one of texts, images, inputs")
    for i, text in enumerate(check_list(body.get("texts", []), "texts")):
        check_string(text, f"texts[{i}]", non_empty=True)
    if len(body.get("texts", [])) > 96:
        raise Invalid("texts may hold at most 96 texts")
    for i, kind in enumerate(check_list(body.get("embedding_types", ["float"]), "embedding_types", min_items=1)):
        if kind not in EMBEDDING_TYPES:
            raise Invalid(f"embedding_types[{i}] must be one of {', '.join(sorted(EMBEDDING_TYPES))}")
    if body.get("truncate", "END") not in ("NONE", "START", "END"):
        raise Invalid("truncate must be NONE, START or END")
    if "output_dimension" in body and body["output_dimension"] not in (256, 512, 1024, 1536):
        raise Invalid("output_dimension must be 256, 512, 1024 or 1536")


def embed(body):
    texts = body.get("texts") or [json.dumps(x) for x in body.get("images") or body.get("inputs")]
    dimensions = body.get("output_dimension", 1024)
    vectors = [embedding_vector(text, dimensions) for text in texts]
    embeddings = {kind: encode_embeddings(vectors, kind) for kind in body.get("embedding_types", ["float"])}
    return {"id": str(uuid.uuid4()), "embeddings": embeddings, "texts": body.get("texts", []),
            "meta": {"api_version": {"version": "2"},
                     "billed_units": {"input_tokens": sum(words(t) for t in body.get("texts", []))}},
            "response_type": "embeddings_by_type"}


def encode_embeddings(vectors, kind):
    """`vectors` in one of Cohere's embedding types: floats, bytes per value (int8/uint8), bits
    packed eight to a byte (binary/ubinary), or base64 of little-endian float32s."""
    if kind == "float":
        return vectors
    if kind == "base64":
        return [base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() for v in vectors]
    if kind in ("int8", "uint8"):
        offset = 0 if kind == "int8" else 128
        return [[max(-128, min(127, round(x * 127))) + offset for x in v] for v in vectors]
    offset = 128 if kind == "binary" else 0
    return [[int("".join("1" if x > 0 else "0" for x in v[i:i + 8]), 2) - offset for i in range(0, len(v), 8)]
            for v in vectors]


def main():
    p = parser(__doc__)
    p.add_argument("--api-key", default=os.environ.get("COHERE_API_KEY"))
    args = p.parse_args()
    if not args.api_key:
        p.error("--api-key (or $COHERE_API_KEY) is required")
    serve(CohereHandler, args, api_key=args.api_key)


if __name__ == "__main__":
    main()
