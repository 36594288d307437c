"""Large and oversized request bodies through `aixds run` + Envoy: a burst of large bodies leaves
the gateway up and serving, and a body over a limit gets 413 in the client's own error format,
whether Envoy's buffer limit or aixds's `--max-request-body` refused it."""

import json
import select
import socket
import threading

import requests

from conftest import openai_backend, route

MB = 1024 * 1024


def chat_body(size, model="m"):
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "x" * size}]})


def messages_body(size, model="m"):
    return json.dumps({"model": model, "max_tokens": 5,
                       "messages": [{"role": "user", "content": "x" * size}]})


def post_all(url, bodies):
    """POSTs every body at once; (status, content-type, text) per body, or the exception."""
    results = [None] * len(bodies)

    def one(i):
        try:
            r = requests.post(url, data=bodies[i], timeout=120,
                              headers={"content-type": "application/json"})
            results[i] = (r.status_code, r.headers.get("content-type"), r.text)
        except requests.RequestException as e:
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def send_early(port, path, body):
    """POSTs `body` in pieces, stopping as soon as the gateway answers (Envoy refuses a body over
    its limit before reading all of it); returns (status, headers, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
                  f"content-length: {len(body)}\r\n\r\n".encode())
        data = memoryview(body.encode())
        while data and not select.select([s], [], [], 0)[0]:
            try:
                sent = s.send(data[:256 * 1024])
            except ConnectionResetError:
                # Envoy answered and closed while the rest was on its way: the answer may
                # still be here to read.
                break
            data = data[sent:]
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += s.recv(65536)
        head, rest = raw.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        headers = {k.lower(): v for k, v in headers.items()}
        length = int(headers.get("content-length", 0))
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return int(lines[0].split()[1]), headers, rest[:length].decode()


def assert_client_error(status, content_type, text, anthropic, expected_status, kind):
    assert status == expected_status, text[:300]
    assert content_type == "application/json"
    body = json.loads(text)
    if anthropic:
        assert body["type"] == "error" and body["error"]["type"] == kind, body
    else:
        assert body["error"]["type"] == kind, body
    return body


def test_concurrent_large_bodies_leave_the_gateway_serving(upstreams, gateway):
    a = upstreams("up-a")
    gw = gateway(route([("m", "a")]) + openai_backend("a", a))
    gw.wait_serving("m")
    bursts = [
        ("/v1/chat/completions", [chat_body(10 * MB)] * 8),
        ("/v1/messages", [messages_body(10 * MB)] * 8),
        ("/v1/chat/completions", [chat_body(30 * MB)] * 4),
    ]
    for path, bodies in bursts:
        for result in post_all(f"{gw.base_url}{path}", bodies):
            # Served, or refused in the client's format (a slow machine may time out): never a
            # dropped connection, which is what a crashed Envoy gives.
            assert isinstance(result, tuple), f"{path}: {result!r}"
            status, content_type, text = result
            assert content_type == "application/json", (path, status, text[:200])
            json.loads(text)
        assert gw.proc.poll() is None, "aixds exited (it does when its Envoy dies); see aixds.log"
    r = requests.post(f"{gw.base_url}/v1/chat/completions",
                      json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                      timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Hello from up-a"
    assert requests.get(f"http://127.0.0.1:{gw.admin_port}/ready", timeout=5).text.strip() == "LIVE"


def test_bodies_over_a_limit_get_413_in_the_clients_format(upstreams, gateway):
    a = upstreams("up-a")
    gw = gateway(route([("m", "a")]) + openai_backend("a", a),
                 args=("--max-request-body", str(MB)))
    gw.wait_serving("m")
    # Over aixds's --max-request-body: the router phase refuses it.
    status, headers, text = send_early(gw.port, "/v1/chat/completions", chat_body(2 * MB))
    body = assert_client_error(status, headers.get("content-type"), text, False, 413,
                               "invalid_request_error")
    assert "limit of 1048576 bytes" in body["error"]["message"]
    status, headers, text = send_early(gw.port, "/v1/messages", messages_body(2 * MB))
    assert_client_error(status, headers.get("content-type"), text, True, 413, "request_too_large")

    # Over Envoy's own buffer limit: Envoy refuses it before aixds sees it.
    for path, make, anthropic, kind in [
            ("/v1/chat/completions", chat_body, False, "invalid_request_error"),
            ("/anthropic/v1/messages", messages_body, True, "request_too_large")]:
        status, headers, text = send_early(gw.port, path, make(80 * MB))
        assert_client_error(status, headers.get("content-type"), text, anthropic, 413, kind)
    assert gw.proc.poll() is None
    r = requests.post(f"{gw.base_url}/v1/chat/completions",
                      json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                      timeout=10)
    assert r.status_code == 200, r.text


def test_an_oversized_model_name_is_a_400_in_the_clients_format(upstreams, gateway):
    a = upstreams("up-a")
    gw = gateway(route([("m", "a")]) + openai_backend("a", a))
    gw.wait_serving("m")
    name = "m" * (100 * 1024)
    r = requests.post(f"{gw.base_url}/v1/chat/completions", data=chat_body(1, name), timeout=10)
    body = assert_client_error(r.status_code, r.headers.get("content-type"), r.text, False, 400,
                               "invalid_request_error")
    assert "limit of 1024 bytes" in body["error"]["message"]
    r = requests.post(f"{gw.base_url}/v1/messages", data=messages_body(1, name), timeout=10)
    assert_client_error(r.status_code, r.headers.get("content-type"), r.text, True, 400,
                        "invalid_request_error")
    # A long name within the limit is routed as usual: no route serves it.
    r = requests.post(f"{gw.base_url}/v1/chat/completions", data=chat_body(1, "m" * 1024),
                      timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
