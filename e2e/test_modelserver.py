"""The model-server simulator on its own: the OpenAI API, the vLLM metrics it reports, its queue."""

import json
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import pytest
import requests

MODELSERVER = Path(__file__).parent / "modelserver.py"


class ModelServer:
    def __init__(self, *args, host="127.0.0.2"):
        self.proc = subprocess.Popen(
            [sys.executable, str(MODELSERVER), "--host", host, "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 15)
        line = self.proc.stdout.readline() if ready else ""
        assert line.startswith("listening on "), f"simulator did not start: {line!r}"
        self.endpoint = line.split()[-1]
        self.url = f"http://{self.endpoint}"

    def metrics(self):
        text = requests.get(f"{self.url}/metrics", timeout=5).text
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.split("{")[0], float(line.rsplit(" ", 1)[1])
                values[name] = value
        return values

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def server():
    s = ModelServer("--max-running", "1", "--token-latency", "0.01")
    yield s
    s.stop()


def wait_for(what, check, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def test_chat_completion_names_the_endpoint(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    reply = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "hello there"}])
    assert reply.headers["x-sim-endpoint"] == server.endpoint
    completion = reply.parse()
    assert completion.choices[0].message.content.startswith(f"Hello from {server.endpoint}")
    assert completion.usage.prompt_tokens == 2
    assert completion.model == "m"


def test_streamed_chat_and_completions(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    chunks = list(client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.startswith(f"Hello from {server.endpoint}")
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.completion_tokens == 8

    stream = client.completions.create(model="m", prompt="San Francisco is", stream=True, max_tokens=4)
    pieces = [c.choices[0].text for c in stream]
    assert "".join(pieces) == f"Hello from {server.endpoint} ."
    plain = client.completions.create(model="m", prompt="x")
    assert plain.choices[0].text.startswith("Hello from")


def test_models_and_bad_requests(server):
    models = requests.get(f"{server.url}/v1/models", timeout=5).json()
    assert [m["id"] for m in models["data"]] == ["sim-model"]
    bad = requests.post(f"{server.url}/v1/chat/completions", data=b"{nope", timeout=5)
    assert bad.status_code == 400
    assert "not a JSON object" in bad.json()["error"]["message"]
    missing = requests.post(f"{server.url}/v1/completions", json={"model": "m"}, timeout=5)
    assert missing.status_code == 400
    # A chunked upload (what a proxy streaming the body sends) reads like any other.
    chunked = requests.post(f"{server.url}/v1/completions",
                            data=iter([b'{"model": "m", ', b'"prompt": "hi"}']), timeout=5)
    assert chunked.status_code == 200, chunked.text


def test_metrics_follow_running_and_queued_requests():
    # One slot, replies of 10 tokens at 0.1 s: three requests at once hold the slot for a while.
    s = ModelServer("--max-running", "1", "--token-latency", "0.1", "--tokens", "10")
    try:
        assert s.metrics() == {"vllm:num_requests_running": 0.0, "vllm:num_requests_waiting": 0.0,
                               "vllm:kv_cache_usage_perc": 0.0}
        results = []

        def send():
            r = requests.post(f"{s.url}/v1/completions", json={"model": "m", "prompt": "p"}, timeout=30)
            results.append(r.status_code)

        threads = [threading.Thread(target=send) for _ in range(3)]
        for t in threads:
            t.start()
        queued = wait_for("one running, two waiting", lambda: (m := s.metrics())
                          and m["vllm:num_requests_waiting"] == 2 and m)
        assert queued["vllm:num_requests_running"] == 1
        assert queued["vllm:kv_cache_usage_perc"] == 1.0
        for t in threads:
            t.join(timeout=30)
        assert results == [200, 200, 200]
        assert s.metrics()["vllm:num_requests_running"] == 0
        assert requests.get(f"{s.url}/admin/stats", timeout=5).json()["served"] == 3
    finally:
        s.stop()


def test_reported_queue_can_be_forced():
    s = ModelServer("--extra-waiting", "5")
    try:
        assert s.metrics()["vllm:num_requests_waiting"] == 5
        r = requests.post(f"{s.url}/admin/waiting", json={"extra": 40}, timeout=5)
        assert r.status_code == 200
        assert s.metrics()["vllm:num_requests_waiting"] == 40
        assert requests.post(f"{s.url}/admin/waiting", json={"extra": -1}, timeout=5).status_code == 400
        # Requests are still served: only the report changes.
        r = requests.post(f"{s.url}/v1/chat/completions",
                          json={"model": "m", "messages": [{"role": "user", "content": "x"}]}, timeout=10)
        assert r.status_code == 200 and json.loads(r.text)["choices"][0]["finish_reason"] == "stop"
    finally:
        s.stop()
