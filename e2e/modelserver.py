#!/usr/bin/env python3
"""Model-server simulator: stands in for one vLLM pod behind an InferencePool.

Stdlib only:

    python3 e2e/modelserver.py --host 127.0.0.2 --port 0 [--max-running 4] [--token-latency 0.01]

Speaks the OpenAI API (`/v1/chat/completions` and `/v1/completions`, plain and SSE streaming,
`/v1/models`) and exposes vLLM-style Prometheus metrics on `/metrics`:
`vllm:num_requests_running`, `vllm:num_requests_waiting` and `vllm:kv_cache_usage_perc`, which
follow the requests it really holds. At most `--max-running` requests generate at once; the
others wait (and count as waiting) for a slot. Each reply token takes `--token-latency` seconds.

For tests: every response carries `x-sim-endpoint: host:port`, and the reported queue can be
made longer than the real one with `--extra-waiting N` or at run time with
`POST /admin/waiting {"extra": N}`; `GET /admin/stats` returns the counts as JSON.
Prints `listening on host:port` once ready.
"""

import argparse
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Engine:
    """The slots, the queue and the counters the metrics report."""

    def __init__(self, max_running, extra_waiting):
        self.max_running = max_running
        self.extra_waiting = extra_waiting
        self.running = 0
        self.waiting = 0
        self.served = 0
        self.cond = threading.Condition()

    def acquire(self):
        with self.cond:
            self.waiting += 1
            while self.running >= self.max_running:
                self.cond.wait()
            self.waiting -= 1
            self.running += 1

    def release(self):
        with self.cond:
            self.running -= 1
            self.served += 1
            self.cond.notify()

    def snapshot(self):
        with self.cond:
            return {
                "running": self.running,
                "waiting": self.waiting,
                "extra_waiting": self.extra_waiting,
                "served": self.served,
                "max_running": self.max_running,
            }

    def metrics(self, model):
        s = self.snapshot()
        labels = f'{{model_name="{model}"}}'
        kv = s["running"] / s["max_running"]
        return (
            "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running{labels} {float(s['running'])}\n"
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f"vllm:num_requests_waiting{labels} {float(s['waiting'] + s['extra_waiting'])}\n"
            "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            f"vllm:kv_cache_usage_perc{labels} {kv}\n"
        )


def prompt_tokens(body):
    """Whitespace word count of the prompt: deterministic, good enough for usage."""
    texts = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        texts.append(prompt)
    elif isinstance(prompt, list):
        texts.extend(p for p in prompt if isinstance(p, str))
    return max(1, sum(len(t.split()) for t in texts))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "modelserver-sim"

    def log_message(self, format, *args):
        pass

    @property
    def endpoint(self):
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def do_GET(self):
        self.read_body()
        if self.path == "/metrics":
            text = self.server.engine.metrics(self.server.model)
            self.send_bytes(200, "text/plain; version=0.0.4", text.encode())
        elif self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [
                {"id": self.server.model, "object": "model", "created": 0, "owned_by": "sim"}]})
        elif self.path == "/admin/stats":
            self.send_json(200, self.server.engine.snapshot())
        elif self.path == "/health":
            self.send_bytes(200, "text/plain", b"ok")
        else:
            self.send_error_json(404, f"no route for GET {self.path}")

    def do_POST(self):
        raw = self.read_body()
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError as e:
            return self.send_error_json(400, f"request body is not a JSON object: {e}")
        if self.path == "/admin/waiting":
            extra = body.get("extra")
            if not isinstance(extra, int) or extra < 0:
                return self.send_error_json(400, '"extra" must be a non-negative integer')
            with self.server.engine.cond:
                self.server.engine.extra_waiting = extra
            return self.send_json(200, self.server.engine.snapshot())
        if self.path not in ("/v1/chat/completions", "/v1/completions"):
            return self.send_error_json(404, f"no route for POST {self.path}")
        chat = self.path == "/v1/chat/completions"
        if chat and not isinstance(body.get("messages"), list):
            return self.send_error_json(400, '"messages" must be a list')
        if not chat and "prompt" not in body:
            return self.send_error_json(400, '"prompt" is required')
        engine = self.server.engine
        engine.acquire()
        try:
            self.generate(body, chat)
        finally:
            engine.release()

    def generate(self, body, chat):
        model = body.get("model") or self.server.model
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        n = self.server.tokens if not isinstance(max_tokens, int) else max(1, min(max_tokens, self.server.tokens))
        pieces = (["Hello", " from", f" {self.endpoint}"] + [" ."] * n)[:max(n, 3)]
        usage = {"prompt_tokens": prompt_tokens(body), "completion_tokens": len(pieces)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:12]
        kind = "chat.completion" if chat else "text_completion"
        if body.get("stream"):
            return self.stream(ident, kind, model, pieces, usage, chat)
        time.sleep(self.server.token_latency * len(pieces))
        text = "".join(pieces)
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                  if chat else {"index": 0, "text": text, "finish_reason": "stop"})
        self.send_json(200, {"id": ident, "object": kind, "created": int(time.time()), "model": model,
                             "choices": [choice], "usage": usage})

    def stream(self, ident, kind, model, pieces, usage, chat):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("x-sim-endpoint", self.endpoint)
        self.end_headers()
        created = int(time.time())
        kind = kind + ".chunk" if chat else kind
        for i, piece in enumerate(pieces):
            time.sleep(self.server.token_latency)
            delta = ({"role": "assistant", "content": piece} if i == 0 else {"content": piece})
            choice = {"index": 0, "delta": delta, "finish_reason": None} if chat else {
                "index": 0, "text": piece, "finish_reason": None}
            self.write_event({"id": ident, "object": kind, "created": created, "model": model,
                              "choices": [choice]})
        last = {"index": 0, "delta": {}, "finish_reason": "stop"} if chat else {
            "index": 0, "text": "", "finish_reason": "stop"}
        self.write_event({"id": ident, "object": kind, "created": created, "model": model,
                          "choices": [last], "usage": usage})
        self.write_chunk(b"data: [DONE]\n\n")
        self.write_chunk(b"")

    def write_event(self, obj):
        self.write_chunk(b"data: " + json.dumps(obj).encode() + b"\n\n")

    def write_chunk(self, data):
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def read_body(self):
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers, if any, end with an empty line.
                    while self.rfile.readline().strip():
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def send_json(self, status, obj):
        self.send_bytes(status, "application/json", json.dumps(obj).encode())

    def send_error_json(self, status, message):
        self.send_json(status, {"error": {"message": message, "type": "invalid_request_error",
                                          "code": status}})

    def send_bytes(self, status, content_type, data):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.send_header("x-sim-endpoint", self.endpoint)
        self.end_headers()
        self.wfile.write(data)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--model", default="sim-model", help="the model /v1/models lists")
    parser.add_argument("--max-running", type=int, default=4,
                        help="requests generating at once; more wait and count as waiting")
    parser.add_argument("--token-latency", type=float, default=0.005, help="seconds per reply token")
    parser.add_argument("--tokens", type=int, default=8, help="reply length in tokens (at least 3)")
    parser.add_argument("--extra-waiting", type=int, default=0,
                        help="added to the waiting requests the metrics report")
    args = parser.parse_args()
    if args.max_running < 1:
        parser.error("--max-running must be at least 1")
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.engine = Engine(args.max_running, args.extra_waiting)
    server.model = args.model
    server.token_latency = args.token_latency
    server.tokens = max(3, args.tokens)
    host, port = server.server_address[:2]
    print(f"listening on {host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
