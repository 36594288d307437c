"""The README's curl commands for the quickstart gateway, run as written against
examples/quickstart.yaml (on free ports instead of 1975, 18081 and 18082), give what their
comments promise."""

import json
import re
import shutil
import subprocess

from conftest import REPO, free_port


def readme_curls():
    """(command, comment) for each curl to localhost:1975 before the InferencePools section,
    whose commands need a pool the quickstart has not."""
    text = (REPO / "README.md").read_text().split("## InferencePools", 1)[0]
    curls = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        command = ""
        for line in block.splitlines():
            if line.endswith("\\"):
                command += line[:-1]
                continue
            command += line
            if command.count("'") % 2:  # a quoted body goes on on the next line
                command += "\n"
                continue
            if command.startswith("curl ") and "localhost:1975" in command:
                shell, _, comment = command.partition("   # ")
                curls.append((shell.strip(), comment.strip()))
            command = ""
    return curls


def hello(upstream):
    def check(out):
        assert json.loads(out)["choices"][0]["message"]["content"] == f"Hello from {upstream}"
    return check


def openai_404(out):
    body, status = out.rstrip("\n").rsplit(" ", 1)
    assert status == "404"
    assert json.loads(body)["error"]["code"] == "model_not_found"


def anthropic_reply(out):
    reply = json.loads(out)
    assert reply["type"] == "message"
    assert reply["content"][0]["text"] == "Hello from upstream-a"


# What each comment promises, checked on what curl prints.
PROMISES = {
    '"Hello from upstream-a"': hello("upstream-a"),
    '"Hello from upstream-b"': hello("upstream-b"),
    "OpenAI error JSON, then 404": openai_404,
    "an Anthropic reply from an OpenAI upstream": anthropic_reply,
}


def test_readme_curls_do_what_they_say(upstreams, gateway):
    assert shutil.which("curl"), "the README's commands need curl"
    curls = readme_curls()
    assert sorted(comment for _, comment in curls) == sorted(PROMISES), curls

    a, b = upstreams("upstream-a"), upstreams("upstream-b")
    manifests = (REPO / "examples" / "quickstart.yaml").read_text()
    listen = free_port()
    for fixed, port in [("18081", a.port), ("18082", b.port), ("1975", listen)]:
        assert f"port: {fixed}\n" in manifests
        manifests = manifests.replace(f"port: {fixed}\n", f"port: {port}\n")
    gw = gateway(manifests, port=listen)
    gw.wait_serving("model-a")
    gw.wait_serving("model-b")

    for command, comment in curls:
        command = command.replace("localhost:1975", f"127.0.0.1:{gw.port}")
        out = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        try:
            PROMISES[comment](out)
        except AssertionError as e:
            raise AssertionError(f"{command}\n# {comment}\ngot: {out}") from e
