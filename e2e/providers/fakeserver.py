"""What the strict fake provider servers in this folder share: the HTTP plumbing of e2e/upstream.py
(keep-alive, chunked request bodies, `--record`), the deterministic reply ("Hello from <id>" in
three pieces, a call to the first tool with {"city": "Paris"}, word-count usage), streams written
in pieces cut at awkward places, and the command line (`--host --port --id --record
--fail-status`).

Each server validates a request with functions that raise `Invalid(message)`; the server turns
that into its provider's own error shape.
"""

import argparse
import hashlib
import json
import math
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

TOOL_ARGUMENTS = {"city": "Paris"}


class Invalid(Exception):
    """A request the real API would refuse as malformed (a 400 in the provider's shape)."""


class Refused(Exception):
    """A request refused with `status` and a provider-shaped `body` (and extra `headers`)."""

    def __init__(self, status, body, headers=None):
        super().__init__(body)
        self.status = status
        self.body = body
        self.headers = headers or {}


def reply_pieces(upstream_id):
    """The reply text split into the deltas that a streaming response sends."""
    return ["Hello", " from", f" {upstream_id}"]


def words(text):
    """Tokens of `text` for usage: its whitespace-separated words."""
    return len(text.split())


@dataclass
class Reply:
    """What the fake model answers: text pieces, or a call to `tool`; why it stopped (`end`,
    `max_tokens`, `stop_sequence` or `tool`); and how many tokens it produced."""

    pieces: list
    finish: str
    stop_sequence: str = None
    tool: str = None
    output_tokens: int = 0

    @property
    def text(self):
        return "".join(self.pieces)


def compose_reply(upstream_id, tool=None, max_tokens=None, stop_sequences=(), text=None):
    """The reply to a request: a call to `tool` if one is to be called; otherwise "Hello from
    <id>" (or `text`, split in three), cut before the first of `stop_sequences` it contains and
    after `max_tokens` pieces, whichever comes first."""
    full = reply_pieces(upstream_id) if text is None else split_in_three(text)
    if tool is not None:
        return Reply([], "tool", tool=tool, output_tokens=len(full))
    pieces, finish, matched = full, "end", None
    joined = "".join(full)
    hits = sorted((joined.find(s), s) for s in stop_sequences if s and s in joined)
    if hits:
        position, matched = hits[0]
        pieces, taken = [], 0
        for piece in full:
            if taken + len(piece) >= position:
                if position > taken:
                    pieces.append(piece[:position - taken])
                break
            pieces.append(piece)
            taken += len(piece)
        finish = "stop_sequence"
    if max_tokens is not None and max_tokens < len(pieces):
        pieces, finish, matched = pieces[:max_tokens], "max_tokens", None
    return Reply(pieces, finish, stop_sequence=matched, output_tokens=len(pieces))


def split_in_three(text):
    """`text` in three consecutive pieces (the last two may be empty for a short text)."""
    third = max(1, len(text) // 3)
    return [text[:third], text[third:2 * third], text[2 * third:]]


def sample_for_schema(schema, upstream_id):
    """A JSON value that a (JSON or OpenAPI) `schema` accepts: an object with its required
    properties (all of them when none are required) filled in, "Hello from <id>" for strings."""
    if not isinstance(schema, dict):
        return {"reply": f"Hello from {upstream_id}"}
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return sample_for_schema(schema[key][0], upstream_id)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    kind = str(kind).lower() if kind is not None else ("object" if "properties" in schema else "string")
    if kind == "object":
        properties = schema.get("properties") or {}
        names = schema.get("required") or list(properties)
        return {name: sample_for_schema(properties.get(name, {}), upstream_id) for name in names}
    if kind == "array":
        return [sample_for_schema(schema.get("items", {}), upstream_id)]
    return {"integer": 1, "number": 1.5, "boolean": True, "null": None}.get(kind, f"Hello from {upstream_id}")


def embedding_vector(text, dimensions, normalize=True):
    """A deterministic embedding of `text`: the same text always gets the same vector."""
    seed = hashlib.sha256(text.encode()).digest()
    vector = [((seed[i % 32] + i * 31) % 255 - 127) / 128 for i in range(dimensions)]
    if normalize:
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        vector = [v / norm for v in vector]
    return vector


class PromptCache:
    """Prompt caching as the providers bill it: the first request with a cache marker writes
    the prompt up to the marker, a later one with the same prefix (and model) reads it."""

    def __init__(self):
        self.seen = set()
        self.lock = threading.Lock()

    def account(self, model, prefix, tokens):
        """(read, written) tokens for a prompt whose cached prefix is `prefix` (any JSON value)
        of `tokens` tokens."""
        if tokens <= 0:
            return 0, 0
        key = json.dumps([model, prefix], sort_keys=True)
        with self.lock:
            if key in self.seen:
                return tokens, 0
            self.seen.add(key)
            return 0, tokens


def check_object(value, where):
    if not isinstance(value, dict):
        raise Invalid(f"{where} must be an object")
    return value


def check_list(value, where, min_items=0):
    if not isinstance(value, list):
        raise Invalid(f"{where} must be an array")
    if len(value) < min_items:
        raise Invalid(f"{where} must have at least {min_items} item(s)")
    return value


def check_string(value, where, non_empty=False):
    if not isinstance(value, str):
        raise Invalid(f"{where} must be a string")
    if non_empty and not value.strip():
        raise Invalid(f"{where} must not be blank")
    return value


def check_int(value, where, minimum=None, maximum=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{where} must be an integer")
    check_range(value, where, minimum, maximum)
    return value


def check_number(value, where, minimum=None, maximum=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"{where} must be a number")
    check_range(value, where, minimum, maximum)
    return value


def check_bool(value, where):
    if not isinstance(value, bool):
        raise Invalid(f"{where} must be a boolean")
    return value


def check_range(value, where, minimum, maximum):
    if minimum is not None and value < minimum:
        raise Invalid(f"{where} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise Invalid(f"{where} must be at most {maximum}")


def check_keys(obj, where, allowed, required=()):
    """Rejects keys of `obj` outside `allowed` and missing `required` ones."""
    for key in obj:
        if key not in allowed:
            raise Invalid(f"{where}: unknown field {key!r}")
    for key in required:
        if key not in obj:
            raise Invalid(f"{where}: missing required field {key!r}")


def check_one_of(obj, where, members):
    """`obj` must set exactly one of `members` (a union type); returns that member's name."""
    present = [m for m in members if m in obj]
    if len(present) != 1:
        raise Invalid(f"{where} must set exactly one of {', '.join(members)} (it sets {present or 'none'})")
    return present[0]


class SplitWriter:
    """Writes the messages of a stream in pieces cut at awkward places, each piece its own
    chunk and TCP write: inside a message's first bytes, in its middle, and with its last two
    bytes held back to go out with the next message. Decoders downstream must cope."""

    def __init__(self, write):
        self.write = write
        self.held = b""

    def send(self, message):
        data = self.held + message
        end = len(data) - 2
        cuts = sorted({c for c in (1, 5, 13, end // 2) if 0 < c < end})
        start = 0
        for cut in [*cuts, end]:
            if cut > start:
                self.write(data[start:cut])
                start = cut
        self.held = data[start:]

    def close(self):
        if self.held:
            self.write(self.held)
            self.held = b""


class Handler(BaseHTTPRequestHandler):
    """Base of the fake provider servers' handlers: reads and records requests, sends JSON and
    streams. Subclasses implement `handle_post(path, query, raw)` (and `handle_get`), raising
    `Refused` for an error answer."""

    # HTTP/1.1 keeps connections alive, as Envoy expects from its upstreams.
    protocol_version = "HTTP/1.1"
    # The head and body go out in separate writes; with Nagle on, each response would wait for
    # the peer's delayed ACK (~40 ms).
    disable_nagle_algorithm = True
    server_version = "fake-provider"

    def do_GET(self):
        self.read_body()
        path, query = self.split_path()
        self.record(path, query, None)
        if path == "/health":
            self.send_bytes(200, "text/plain", b"ok")
        else:
            self.handle_get(path, query)

    def do_POST(self):
        raw = self.read_body()
        path, query = self.split_path()
        self.record(path, query, self.recorded_body(raw))
        try:
            self.handle_post(path, query, raw)
        except Refused as refusal:
            self.send_json(refusal.status, refusal.body, refusal.headers)

    def handle_get(self, path, query):
        raise Refused(404, {"message": f"no route for GET {path}"})

    def split_path(self):
        parts = urlsplit(self.path)
        return parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))

    def recorded_body(self, raw):
        """The body as recorded: parsed JSON, form fields, or text."""
        content_type = self.headers.get("Content-Type", "")
        try:
            if "application/x-www-form-urlencoded" in content_type:
                return dict(parse_qsl(raw.decode(), keep_blank_values=True))
            return json.loads(raw) if raw else None
        except (UnicodeDecodeError, ValueError):
            return raw.decode("utf-8", "replace")

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

    def record(self, path, query, body):
        if self.server.record_path is None:
            return
        line = json.dumps({
            "method": self.command,
            "path": path,
            "query": query,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
        })
        with self.server.record_lock, open(self.server.record_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def parse_json_object(self, raw):
        """The request body as a JSON object, or `Invalid`."""
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as err:
            raise Invalid(f"request body is not valid JSON: {err}") from None
        if not isinstance(body, dict):
            raise Invalid("request body must be a JSON object")
        return body

    def failure(self, model):
        """The status to fail with: --fail-status, or `fail-NNN` in the model name."""
        if self.server.fail_status:
            return self.server.fail_status
        match = re.search(r"fail-(\d{3})", model or "")
        return int(match.group(1)) if match else None

    def send_bytes(self, status, content_type, payload, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-upstream-id", self.server.upstream_id)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def send_json(self, status, obj, headers=None):
        self.send_bytes(status, "application/json", json.dumps(obj).encode(), headers)

    def start_stream(self, content_type, headers=None):
        """Starts a chunked 200 response; returns a `SplitWriter` for its messages (finish with
        `end_stream`)."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-upstream-id", self.server.upstream_id)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        return SplitWriter(self.write_chunk)

    def end_stream(self, writer):
        writer.close()
        self.write_chunk(b"")

    def write_chunk(self, payload):
        self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
        self.wfile.flush()


def parser(description):
    """The command line every fake provider server shares; add your own options to it."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--id", required=True, help="name reported in replies and x-upstream-id")
    p.add_argument("--record", metavar="FILE", help="append one JSON line per request to FILE")
    p.add_argument("--fail-status", type=int, metavar="N",
                   help="answer every request with this error status, in the provider's own format")
    return p


def serve(handler, args, **state):
    """Serves `handler` on the address in `args`, with `state` as attributes of the server;
    prints `listening on HOST:PORT` once ready."""
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    server.upstream_id = args.id
    server.record_path = args.record
    server.fail_status = args.fail_status
    server.record_lock = threading.Lock()
    for name, value in state.items():
        setattr(server, name, value)
    host, port = server.server_address[:2]
    print(f"listening on {host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
