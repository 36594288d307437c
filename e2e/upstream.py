#!/usr/bin/env python3
"""Fake LLM upstream speaking the OpenAI chat-completions and Anthropic messages wire formats.

Stdlib only, so it runs anywhere python3 does:

    python3 e2e/upstream.py --host 127.0.0.1 --port 0 --id backend-a [--record requests.jsonl]

With `--record FILE`, each request is appended to FILE as a JSON line: method, path, headers,
the parsed body and the raw body (base64). Every reply says "Hello from <id>" and carries an `x-upstream-id: <id>` header, which lets
tests and demos see which backend the gateway routed to. A request that offers tools gets a
call to the first tool (arguments {"city": "Paris"}) until it carries a tool result. For
failure tests: `--fail-status N` (or `fail-NNN` in the model name) answers with that error in
the API's own format. Before answering, `silent` in the model name reads the request and never
answers (until the gateway closes the connection), `reset` resets the connection (TCP RST) and
`garbage` answers with bytes that are not HTTP. `cut` in the model name makes a stream send its
start and first piece of text, wait for a `POST /cut` (at most 10 s, so that a test can first
see those events arrive), then close the connection without ending the chunked body (`cut-reset`:
reset it); `stall` sends the same start and then nothing more, until the gateway closes the
connection. `unframed` in the model name sends a stream without chunked framing (the body ends
when the connection closes, as in HTTP/1.0), so a cut looks like a complete body to the gateway.
"""

import argparse
import base64
import json
import re
import socket
import struct
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def count_tokens(messages, system=None):
    """Whitespace word count of all text in the prompt; deterministic, good enough for usage."""
    texts = [system] if isinstance(system, str) else []
    for part in system if isinstance(system, list) else []:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            texts.append(part["text"])
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return max(1, sum(len(t.split()) for t in texts))


def reply_pieces(upstream_id):
    """The reply text split into the deltas that a streaming response sends."""
    return ["Hello", " from", f" {upstream_id}"]


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive, as Envoy expects from its upstreams.
    protocol_version = "HTTP/1.1"
    # The head and body go out in separate writes; with Nagle on, each response would wait for
    # the peer's delayed ACK (~40 ms).
    disable_nagle_algorithm = True
    server_version = "fake-llm-upstream"

    def do_GET(self):
        self.read_body()
        self.record(None)
        if self.path == "/health":
            self.send_bytes(200, "text/plain", b"ok")
        else:
            self.send_error_json(404, f"no route for GET {self.path}", "not_found_error")

    def do_POST(self):
        raw = self.read_body()
        if self.path == "/cut":
            self.server.cut_release.release()
            self.send_bytes(200, "text/plain", b"ok")
            return
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            self.record(None, raw)
            self.send_error_json(400, f"request body is not valid JSON: {err}")
            return
        self.record(body, raw)
        if not isinstance(body, dict):
            self.send_error_json(400, "request body must be a JSON object")
        elif self.failure(body) is not None:
            self.send_failure(self.failure(body))
        elif self.misbehaviour(body) == "silent":
            self.wait_for_close()
        elif self.misbehaviour(body) == "reset":
            self.reset()
        elif self.misbehaviour(body) == "garbage":
            self.wfile.write(b"this is not HTTP\r\n\r\n")
            self.close_connection = True
        elif self.path == "/v1/chat/completions":
            self.chat_completions(body)
        elif self.path == "/v1/messages":
            self.messages(body)
        elif self.path == "/v1/responses":
            self.responses_api(body)
        elif self.path == "/v1/messages/count_tokens":
            self.send_json(200, {"input_tokens": count_tokens(body.get("messages"), body.get("system"))})
        else:
            self.send_error_json(404, f"no route for POST {self.path}", "not_found_error")

    def failure(self, body):
        """The status to fail with: --fail-status, or `fail-NNN` in the model name."""
        if self.server.fail_status:
            return self.server.fail_status
        match = re.search(r"fail-(\d{3})", str(body.get("model", "")))
        return int(match.group(1)) if match else None

    def send_failure(self, status):
        message = f"simulated failure {status} from {self.server.upstream_id}"
        if self.path == "/v1/messages":
            kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
            self.send_json(status, {"type": "error", "error": {"type": kind, "message": message}})
        else:
            kind = "rate_limit_exceeded" if status == 429 else "server_error"
            self.send_error_json(status, message, kind)

    def misbehaviour(self, body):
        """What to do instead of answering: `silent`, `reset` or `garbage` in the model name (a
        `cut` or `stall` model misbehaves in the middle of its stream instead)."""
        model = str(body.get("model", ""))
        if "cut" in model or "stall" in model:
            return None
        return next((m for m in ("silent", "reset", "garbage") if m in model), None)

    def wait_for_close(self):
        """Sends nothing more and returns once the peer has closed the connection."""
        while self.connection.recv(4096):
            pass
        self.close_connection = True

    def reset(self):
        """Resets the connection: a zero linger time makes closing it send a TCP RST."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def tool_call(self, body):
        """(name, arguments) of a tool to call: the first tool offered, unless the last message
        already carries a tool result."""
        tools = body.get("tools") or []
        messages = body.get("messages") or []
        if not tools or not messages:
            return None
        last = messages[-1]
        content = last.get("content") if isinstance(last, dict) else None
        if last.get("role") == "tool" or (isinstance(content, list) and any(
                isinstance(p, dict) and p.get("type") == "tool_result" for p in content)):
            return None
        tool = tools[0]
        name = (tool.get("function") or {}).get("name") or tool.get("name")
        return (name, {"city": "Paris"}) if name else None

    def cut(self, body):
        """Whether a streamed reply stops after its first events: `cut` or `stall` in the model
        name."""
        model = str(body.get("model", ""))
        return "cut" in model or "stall" in model

    def end_cut(self, body):
        """Ends a cut reply: a `stall` one once the peer closes the connection; otherwise after a
        `POST /cut` (at most 10 s), by closing the connection, or resetting it for `cut-reset`."""
        model = str(body.get("model", ""))
        if "stall" in model:
            self.wait_for_close()
            return
        self.server.cut_release.acquire(timeout=10)
        if "reset" in model:
            self.reset()
        self.close_connection = True

    def chat_completions(self, body):
        model = body.get("model", "unknown")
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        pieces = reply_pieces(self.server.upstream_id)
        prompt_tokens = count_tokens(body.get("messages"))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens + len(pieces),
        }
        call = self.tool_call(body)
        call_id = f"call_{uuid.uuid4().hex[:12]}"
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(pieces)}
            if call:
                message = {"role": "assistant", "content": None, "tool_calls": [{
                    "id": call_id, "type": "function",
                    "function": {"name": call[0], "arguments": json.dumps(call[1])}}]}
            self.send_json(200, {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if call else "stop",
                }],
                "usage": usage,
            })
            return

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta, finish_reason=None):
            data = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            # OpenAI sends `usage: null` on every chunk when usage was requested.
            if include_usage:
                data["usage"] = None
            return data

        self.start_sse(body)
        self.send_sse(chunk({"role": "assistant", "content": ""}))
        if self.cut(body):
            self.send_sse(chunk({"content": pieces[0]}))
            self.end_cut(body)
            return
        if call:
            arguments = json.dumps(call[1])
            half = len(arguments) // 2
            self.send_sse(chunk({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                                 "function": {"name": call[0], "arguments": ""}}]}))
            for part in (arguments[:half], arguments[half:]):
                self.send_sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}))
            self.send_sse(chunk({}, "tool_calls"))
        else:
            for piece in pieces:
                self.send_sse(chunk({"content": piece}))
            self.send_sse(chunk({}, "stop"))
        if include_usage:
            final = chunk({})
            final["choices"] = []
            final["usage"] = usage
            self.send_sse(final)
        self.send_sse_raw("[DONE]")
        self.end_sse()

    def responses_api(self, body):
        """OpenAI's Responses API, text only. Like OpenAI, it refuses the chat-only
        `stream_options.include_usage` (usage always comes with `response.completed`)."""
        if "include_usage" in (body.get("stream_options") or {}):
            self.send_error_json(400, "Unknown parameter: 'stream_options.include_usage'.")
            return
        given = body.get("input")
        if isinstance(given, str):
            given = [{"role": "user", "content": given}]
        input_tokens = count_tokens(given, body.get("instructions"))
        pieces = reply_pieces(self.server.upstream_id)
        response_id = f"resp_{uuid.uuid4().hex}"
        item_id = f"msg_{uuid.uuid4().hex}"

        def response(status, text, usage):
            output = []
            if text is not None:
                output = [{"type": "message", "id": item_id, "status": "completed", "role": "assistant",
                           "content": [{"type": "output_text", "text": text, "annotations": []}]}]
            return {"id": response_id, "object": "response", "created_at": int(time.time()),
                    "status": status, "model": body.get("model"), "output": output, "usage": usage}

        usage = {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": len(pieces), "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": input_tokens + len(pieces)}
        if not body.get("stream"):
            self.send_json(200, response("completed", "".join(pieces), usage))
            return
        self.start_sse(body)
        sequence = iter(range(1000))
        self.send_sse({"type": "response.created", "sequence_number": next(sequence),
                       "response": response("in_progress", None, None)}, "response.created")
        for piece in pieces:
            self.send_sse({"type": "response.output_text.delta", "sequence_number": next(sequence),
                           "item_id": item_id, "output_index": 0, "content_index": 0, "delta": piece},
                          "response.output_text.delta")
            if self.cut(body):
                self.end_cut(body)
                return
        self.send_sse({"type": "response.completed", "sequence_number": next(sequence),
                       "response": response("completed", "".join(pieces), usage)}, "response.completed")
        self.end_sse()

    def messages(self, body):
        model = body.get("model", "unknown")
        message_id = f"msg_{uuid.uuid4().hex}"
        pieces = reply_pieces(self.server.upstream_id)
        input_tokens = count_tokens(body.get("messages"), body.get("system"))
        call = self.tool_call(body)
        call_id = f"toolu_{uuid.uuid4().hex[:12]}"
        if not body.get("stream"):
            content = [{"type": "text", "text": "".join(pieces)}]
            if call:
                content = [{"type": "tool_use", "id": call_id, "name": call[0], "input": call[1]}]
            self.send_json(200, {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": "tool_use" if call else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": len(pieces)},
            })
            return

        self.start_sse(body)
        self.send_sse({
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1},
            },
        }, event="message_start")
        if self.cut(body):
            self.send_sse({
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }, event="content_block_start")
            self.send_sse({
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": pieces[0]},
            }, event="content_block_delta")
            self.end_cut(body)
            return
        if call:
            arguments = json.dumps(call[1])
            half = len(arguments) // 2
            self.send_sse({
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "tool_use", "id": call_id, "name": call[0], "input": {}},
            }, event="content_block_start")
            for part in (arguments[:half], arguments[half:]):
                self.send_sse({
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": part},
                }, event="content_block_delta")
        else:
            self.send_sse({
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }, event="content_block_start")
            for piece in pieces:
                self.send_sse({
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                }, event="content_block_delta")
        self.send_sse({"type": "content_block_stop", "index": 0}, event="content_block_stop")
        self.send_sse({
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use" if call else "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": len(pieces)},
        }, event="message_delta")
        self.send_sse({"type": "message_stop"}, event="message_stop")
        self.end_sse()

    def read_body(self):
        # Envoy forwards bodies it has rewritten (e.g. via ext_proc) with chunked encoding.
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def record(self, body, raw=b""):
        if self.server.record_path is None:
            return
        line = json.dumps({
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
            # The bytes as received, for checks that hash them (a SigV4 signature).
            "raw": base64.b64encode(raw).decode(),
        })
        with self.server.record_lock, open(self.server.record_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def send_bytes(self, status, content_type, payload):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-upstream-id", self.server.upstream_id)
        self.end_headers()
        self.wfile.write(payload)

    def send_json(self, status, obj):
        self.send_bytes(status, "application/json", json.dumps(obj).encode())

    def send_error_json(self, status, message, error_type="invalid_request_error"):
        self.send_json(status, {"error": {"message": message, "type": error_type, "param": None, "code": None}})

    def start_sse(self, body):
        # `unframed`: no chunked encoding; the connection's close ends the body.
        self.unframed = "unframed" in str(body.get("model", ""))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        if self.unframed:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-upstream-id", self.server.upstream_id)
        self.end_headers()

    def send_sse(self, obj, event=None):
        self.send_sse_raw(json.dumps(obj), event)

    def send_sse_raw(self, data, event=None):
        frame = (f"event: {event}\n" if event else "") + f"data: {data}\n\n"
        self.write_chunk(frame.encode())

    def end_sse(self):
        self.write_chunk(b"")

    def write_chunk(self, payload):
        if self.unframed:
            self.wfile.write(payload)
            self.wfile.flush()
            return
        self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
        self.wfile.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--id", required=True, help="name reported in replies and x-upstream-id")
    parser.add_argument("--record", metavar="FILE", help="append one JSON line per request to FILE")
    parser.add_argument("--fail-status", type=int, metavar="N",
                        help="answer every POST with this error status, in the API's own format")
    args = parser.parse_args()

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.upstream_id = args.id
    server.record_path = args.record
    server.fail_status = args.fail_status
    server.record_lock = threading.Lock()
    server.cut_release = threading.Semaphore(0)
    host, port = server.server_address[:2]
    print(f"listening on {host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
