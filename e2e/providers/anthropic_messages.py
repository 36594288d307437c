"""Anthropic's Messages API body as the clouds host it: Bedrock's InvokeModel (anthropic_version
"bedrock-2023-05-31") and Vertex AI's rawPredict ("vertex-2023-10-16") take Anthropic's request
without `model` and answer Anthropic's message or its stream events. A dated Anthropic API
version ("2026-10-21") is accepted too: the official anthropic SDK sends its own on both clouds.

`validate` checks a body against Anthropic's documented schema and conversation rules (roles,
non-empty text, each tool_use answered by a tool_result first thing in the next user turn, ...)
and raises `Invalid`; `message` and `stream_events` build the reply.
"""

import base64
import binascii
import json
import re
import uuid

from fakeserver import (
    TOOL_ARGUMENTS, Invalid, check_bool, check_int, check_keys, check_list, check_number,
    check_object, check_string, compose_reply, words,
)

TOP_LEVEL = {"anthropic_version", "messages", "system", "max_tokens", "metadata", "stop_sequences",
             "temperature", "thinking", "tool_choice", "tools", "top_k", "top_p"}
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
# Recent official SDKs send their dated API version (e.g. "2026-10-21") in place of the cloud's.
API_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
IMAGE_TYPES = ("image/gif", "image/jpeg", "image/png", "image/webp")
STOP_REASONS = {"end": "end_turn", "max_tokens": "max_tokens", "stop_sequence": "stop_sequence", "tool": "tool_use"}


def validate(body, version, extra_fields=()):
    """Checks an Anthropic Messages body whose `anthropic_version` must be the cloud's `version`
    (or a dated Anthropic API version); `extra_fields` are further top-level fields this host
    accepts (e.g. `stream` on Vertex)."""
    check_keys(body, "request", TOP_LEVEL | set(extra_fields), ("anthropic_version", "max_tokens", "messages"))
    given = body["anthropic_version"]
    if given != version and not (isinstance(given, str) and API_DATE.match(given)):
        raise Invalid(f"anthropic_version must be {version!r} (or a dated API version), not {given!r}")
    check_int(body["max_tokens"], "max_tokens", minimum=1)
    if "stream" in body:
        check_bool(body["stream"], "stream")
    if "temperature" in body:
        check_number(body["temperature"], "temperature", 0, 1)
    if "top_p" in body:
        check_number(body["top_p"], "top_p", 0, 1)
    if "top_k" in body:
        check_int(body["top_k"], "top_k", minimum=0)
    for i, sequence in enumerate(check_list(body.get("stop_sequences", []), "stop_sequences")):
        check_string(sequence, f"stop_sequences.{i}", non_empty=True)
    if "metadata" in body:
        check_keys(check_object(body["metadata"], "metadata"), "metadata", {"user_id"})
    if "anthropic_beta" in body:
        for i, beta in enumerate(check_list(body["anthropic_beta"], "anthropic_beta")):
            check_string(beta, f"anthropic_beta.{i}")
    if "thinking" in body:
        check_thinking(body["thinking"], body["max_tokens"])
    check_system(body.get("system"))
    names = check_tools(body.get("tools"))
    check_tool_choice(body.get("tool_choice"), names)
    check_messages(body["messages"])


def check_thinking(thinking, max_tokens):
    check_object(thinking, "thinking")
    if thinking.get("type") == "disabled":
        check_keys(thinking, "thinking", {"type"})
        return
    if thinking.get("type") != "enabled":
        raise Invalid("thinking.type must be 'enabled' or 'disabled'")
    check_keys(thinking, "thinking", {"type", "budget_tokens"}, ("budget_tokens",))
    check_int(thinking["budget_tokens"], "thinking.budget_tokens", minimum=1024)
    if thinking["budget_tokens"] >= max_tokens:
        raise Invalid("thinking.budget_tokens must be less than max_tokens")


def check_system(system):
    if system is None or isinstance(system, str):
        return
    for i, block in enumerate(check_list(system, "system")):
        check_object(block, f"system.{i}")
        if block.get("type") != "text":
            raise Invalid(f"system.{i}.type must be 'text'")
        check_keys(block, f"system.{i}", {"type", "text", "cache_control", "citations"}, ("text",))
        check_string(block["text"], f"system.{i}.text", non_empty=True)
        check_cache_control(block, f"system.{i}")


def check_cache_control(block, where):
    if "cache_control" in block:
        control = check_object(block["cache_control"], f"{where}.cache_control")
        check_keys(control, f"{where}.cache_control", {"type", "ttl"}, ("type",))
        if control["type"] != "ephemeral":
            raise Invalid(f"{where}.cache_control.type must be 'ephemeral'")


def check_tools(tools):
    """The names of the custom tools offered."""
    if tools is None:
        return []
    names = []
    for i, tool in enumerate(check_list(tools, "tools")):
        where = f"tools.{i}"
        check_object(tool, where)
        if tool.get("type", "custom") != "custom":
            # Anthropic-defined tools (bash, text editor, web search, ...) carry a versioned type.
            check_keys(tool, where, {"type", "name", "cache_control", "max_uses", "allowed_domains",
                                     "blocked_domains", "user_location", "display_width_px",
                                     "display_height_px", "display_number"}, ("name",))
            continue
        check_keys(tool, where, {"type", "name", "description", "input_schema", "cache_control"},
                   ("name", "input_schema"))
        if not TOOL_NAME.match(check_string(tool["name"], f"{where}.name")):
            raise Invalid(f"{where}.name must match {TOOL_NAME.pattern}")
        if "description" in tool:
            check_string(tool["description"], f"{where}.description")
        schema = check_object(tool["input_schema"], f"{where}.input_schema")
        if schema.get("type") != "object":
            raise Invalid(f"{where}.input_schema.type must be 'object'")
        check_cache_control(tool, where)
        if tool["name"] in names:
            raise Invalid(f"{where}.name: tool names must be unique ({tool['name']!r} repeats)")
        names.append(tool["name"])
    return names


def check_tool_choice(choice, names):
    if choice is None:
        return
    check_object(choice, "tool_choice")
    kind = choice.get("type")
    if kind not in ("auto", "any", "tool", "none"):
        raise Invalid("tool_choice.type must be one of auto, any, tool, none")
    allowed = {"type", "disable_parallel_tool_use"} | ({"name"} if kind == "tool" else set())
    check_keys(choice, "tool_choice", allowed, ("name",) if kind == "tool" else ())
    if kind != "none" and not names:
        raise Invalid("tool_choice may only be given with tools")
    if kind == "tool" and choice["name"] not in names:
        raise Invalid(f"tool_choice.name {choice['name']!r} is not one of the tools")


def check_messages(messages):
    check_list(messages, "messages", min_items=1)
    pending = set()
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        check_object(message, where)
        check_keys(message, where, {"role", "content"}, ("role", "content"))
        role = message["role"]
        if role not in ("user", "assistant"):
            raise Invalid(f"{where}.role must be 'user' or 'assistant'")
        if i == 0 and role != "user":
            raise Invalid("messages: the first message must use the 'user' role")
        blocks = content_blocks(message["content"], where, last_assistant=(i == len(messages) - 1 and role == "assistant"))
        for j, block in enumerate(blocks):
            check_block(block, f"{where}.content.{j}", role)
        results = [b["tool_use_id"] for b in blocks if b.get("type") == "tool_result"]
        if pending:
            missing = pending - set(results)
            if missing:
                raise Invalid(f"{where}: tool_use ids were found without tool_result blocks immediately after: "
                              f"{', '.join(sorted(missing))}")
            leading = len(results)
            if any(b.get("type") != "tool_result" for b in blocks[:leading]):
                raise Invalid(f"{where}: tool_result blocks must come first in the content, before any other block")
        unexpected = set(results) - pending
        if unexpected:
            raise Invalid(f"{where}: unexpected tool_use_id found in tool_result blocks: {', '.join(sorted(unexpected))}"
                          " (each must answer a tool_use of the previous message)")
        pending = {b["id"] for b in blocks if b.get("type") == "tool_use"}


def content_blocks(content, where, last_assistant):
    """The content of a message as blocks (a string is one text block)."""
    if isinstance(content, str):
        if not content.strip() and not last_assistant:
            raise Invalid(f"{where}.content must not be empty")
        return [{"type": "text", "text": content}] if content else []
    blocks = check_list(content, f"{where}.content", min_items=1)
    for j, block in enumerate(blocks):
        check_object(block, f"{where}.content.{j}")
    return blocks


BLOCKS = {
    "text": ({"type", "text", "cache_control", "citations"}, ("text",)),
    "image": ({"type", "source", "cache_control"}, ("source",)),
    "document": ({"type", "source", "title", "context", "citations", "cache_control"}, ("source",)),
    "tool_use": ({"type", "id", "name", "input", "cache_control"}, ("id", "name", "input")),
    "tool_result": ({"type", "tool_use_id", "content", "is_error", "cache_control"}, ("tool_use_id",)),
    "thinking": ({"type", "thinking", "signature"}, ("thinking", "signature")),
    "redacted_thinking": ({"type", "data"}, ("data",)),
}


def check_block(block, where, role):
    kind = block.get("type")
    if not isinstance(kind, str) or kind not in BLOCKS:
        raise Invalid(f"{where}.type must be one of {', '.join(BLOCKS)}")
    check_keys(block, where, *BLOCKS[kind])
    check_cache_control(block, where)
    if kind == "text":
        check_string(block["text"], f"{where}.text", non_empty=True)
    elif kind == "image":
        check_image_source(block["source"], f"{where}.source")
    elif kind == "document":
        source = check_object(block["source"], f"{where}.source")
        if source.get("type") not in ("base64", "text", "url", "content"):
            raise Invalid(f"{where}.source.type must be one of base64, text, url, content")
    elif kind == "tool_use":
        if role != "assistant":
            raise Invalid(f"{where}: tool_use blocks may only appear in assistant messages")
        check_string(block["id"], f"{where}.id", non_empty=True)
        check_string(block["name"], f"{where}.name", non_empty=True)
        check_object(block["input"], f"{where}.input")
    elif kind == "tool_result":
        if role != "user":
            raise Invalid(f"{where}: tool_result blocks may only appear in user messages")
        check_string(block["tool_use_id"], f"{where}.tool_use_id", non_empty=True)
        if "is_error" in block:
            check_bool(block["is_error"], f"{where}.is_error")
        content = block.get("content", "")
        if not isinstance(content, str):
            for k, part in enumerate(check_list(content, f"{where}.content")):
                check_object(part, f"{where}.content.{k}")
                if part.get("type") not in ("text", "image", "document", "search_result"):
                    raise Invalid(f"{where}.content.{k}.type must be text, image, document or search_result")
                check_block(part, f"{where}.content.{k}", role)
    elif role != "assistant":
        raise Invalid(f"{where}: {kind} blocks may only appear in assistant messages")


def check_image_source(source, where):
    check_object(source, where)
    if source.get("type") == "url":
        check_keys(source, where, {"type", "url"}, ("url",))
        return
    if source.get("type") != "base64":
        raise Invalid(f"{where}.type must be 'base64' or 'url'")
    check_keys(source, where, {"type", "media_type", "data"}, ("media_type", "data"))
    if source["media_type"] not in IMAGE_TYPES:
        raise Invalid(f"{where}.media_type must be one of {', '.join(sorted(IMAGE_TYPES))}")
    try:
        base64.b64decode(check_string(source["data"], f"{where}.data"), validate=True)
    except binascii.Error:
        raise Invalid(f"{where}.data is not valid base64") from None


def prompt_blocks(body):
    """The system and message blocks in prompt order, strings as text blocks."""
    system = body.get("system")
    blocks = [{"type": "text", "text": system}] if isinstance(system, str) else list(system or [])
    for message in body["messages"]:
        content = message["content"]
        blocks.extend([{"type": "text", "text": content}] if isinstance(content, str) else content)
    return blocks


def block_words(block):
    return words(block["text"]) if block.get("type") == "text" and isinstance(block.get("text"), str) else 0


def usage(body, model, cache):
    """Anthropic usage for the prompt: `input_tokens` counts what was neither read from nor
    written to the cache; the prefix up to the last `cache_control` mark is cached."""
    blocks = prompt_blocks(body)
    total = max(1, sum(block_words(b) for b in blocks))
    marked = [i for i, b in enumerate(blocks) if "cache_control" in b]
    read = written = 0
    if marked:
        prefix = blocks[:marked[-1] + 1]
        read, written = cache.account(model, prefix, sum(block_words(b) for b in prefix))
    return {"input_tokens": max(0, total - read - written), "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read}


def tool_to_call(body):
    """The custom tool the fake model calls: the one `tool_choice` names, else the first offered,
    unless `tool_choice` is none or the last message carries a tool result."""
    tools = [t for t in body.get("tools") or [] if t.get("type", "custom") == "custom"]
    choice = body.get("tool_choice") or {"type": "auto"}
    last = body["messages"][-1]["content"]
    answered = isinstance(last, list) and any(b.get("type") == "tool_result" for b in last)
    if not tools or answered or choice["type"] == "none":
        return None
    return choice["name"] if choice["type"] == "tool" else tools[0]["name"]


def reply(body, upstream_id):
    return compose_reply(upstream_id, tool=tool_to_call(body), max_tokens=body["max_tokens"],
                         stop_sequences=body.get("stop_sequences", ()))


def message(body, model, upstream_id, cache):
    """The Anthropic message answering `body`."""
    answer = reply(body, upstream_id)
    if answer.tool:
        content = [{"type": "tool_use", "id": tool_use_id(), "name": answer.tool, "input": TOOL_ARGUMENTS}]
    else:
        content = [{"type": "text", "text": answer.text}]
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS[answer.finish],
        "stop_sequence": answer.stop_sequence,
        "usage": {**usage(body, model, cache), "output_tokens": answer.output_tokens},
    }


def tool_use_id():
    return f"toolu_{uuid.uuid4().hex[:24]}"


def stream_events(body, model, upstream_id, cache):
    """The (event name, data) pairs of the Anthropic stream answering `body`."""
    answer = reply(body, upstream_id)
    start_usage = {**usage(body, model, cache), "output_tokens": 1}
    events = [("message_start", {"type": "message_start", "message": {
        "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}}),
        ("ping", {"type": "ping"})]
    if answer.tool:
        arguments = json.dumps(TOOL_ARGUMENTS)
        half = len(arguments) // 2
        events.append(("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": tool_use_id(), "name": answer.tool, "input": {}}}))
        events.extend(("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "input_json_delta", "partial_json": part}}) for part in (arguments[:half], arguments[half:]))
    else:
        events.append(("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}}))
        events.extend(("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "text_delta", "text": piece}}) for piece in answer.pieces)
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(("message_delta", {"type": "message_delta", "delta": {
        "stop_reason": STOP_REASONS[answer.finish], "stop_sequence": answer.stop_sequence},
        "usage": {"output_tokens": answer.output_tokens}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events
