"""Cloud credentials through a real Envoy, as a provider sees them: an AWSCredentials backend gets
requests whose SigV4 signature botocore's own signer recomputes from what arrived; GCP and Azure
backends get the access tokens fake token endpoints issued, and newer ones after a refresh; no
key, secret or token shows in aixds's logs, debug page, `validate` or `explain`."""

import base64
import json
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import aixds_bin, openai_backend, route

ACCESS_KEY = "AKIDE2EEXAMPLE"
SECRET_KEY = "e2e/Secret+Access+Key0123456789abcdefghij"
SESSION_TOKEN = "FwoGZXIvYXdzE2eSessionToken//////////==="
REGION = "us-west-2"
CLIENT_SECRET = "azure~e2e.client-secret-0123"
TENANT = "e2e-tenant"
CLIENT_KEY = "sk-client-key-not-for-providers"
# A few seconds: the test sees a refresh.
LIFETIME = 2

AWS_CREDENTIALS_FILE = f"""# written by aws configure
[default]
aws_access_key_id = AKIDNOTTHISONE
aws_secret_access_key = not-this-one

[bedrock]
aws_access_key_id = {ACCESS_KEY}
aws_secret_access_key = {SECRET_KEY}
aws_session_token = {SESSION_TOKEN}
"""


class TokenEndpoints:
    """Fake Google and Entra ID token endpoints issuing numbered tokens that live LIFETIME s."""

    def __init__(self):
        self.issued = {"gcp": 0, "azure": 0}
        self.problems = []
        endpoints = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                form = dict(urllib.parse.parse_qsl(
                    self.rfile.read(int(self.headers["Content-Length"])).decode()))
                kind = "gcp" if self.path == "/token" else "azure"
                problem = endpoints.check(kind, self.path, form)
                if problem:
                    endpoints.problems.append(problem)
                    self.reply(400, {"error": "invalid_grant", "error_description": problem})
                    return
                endpoints.issued[kind] += 1
                self.reply(200, {"access_token": f"{kind}-e2e-token-{endpoints.issued[kind]}",
                                 "expires_in": LIFETIME, "token_type": "Bearer"})

            def reply(self, status, body):
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def check(self, kind, path, form):
        """What the real endpoint would refuse (the Rust tests also verify the JWT's signature)."""
        if kind == "gcp":
            if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
                return f"grant_type {form.get('grant_type')}"
            claims = form.get("assertion", "").split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
            if (claims.get("iss"), claims.get("aud")) != ("e2e@p.iam.gserviceaccount.com",
                                                          f"{self.base}/token"):
                return f"claims {claims}"
            return None
        want = {"grant_type": "client_credentials", "client_id": "e2e-client",
                "client_secret": CLIENT_SECRET,
                "scope": "https://cognitiveservices.azure.com/.default"}
        if path != f"/{TENANT}/oauth2/v2.0/token" or form != want:
            return f"{path} {sorted(form)}"
        return None

    def stop(self):
        self.server.shutdown()


def service_account(tmp_path, token_uri):
    """A service account key file with a fresh RSA key made by openssl."""
    key = tmp_path / "sa.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", str(key)], check=True, capture_output=True)
    return json.dumps({"type": "service_account", "project_id": "p", "private_key_id": "k1",
                       "private_key": key.read_text(),
                       "client_email": "e2e@p.iam.gserviceaccount.com", "token_uri": token_uri})


def policies(key_file, profile="bedrock"):
    return f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: aws, namespace: default}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: aws}}]
  type: AWSCredentials
  awsCredentials:
    region: {REGION}
    credentialsFile: {{secretRef: {{name: aws-credentials}}, profile: {profile}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: aws-credentials, namespace: default}}
stringData:
  credentials: {json.dumps(AWS_CREDENTIALS_FILE)}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: gcp, namespace: default}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: gcp}}]
  type: GCPCredentials
  gcpCredentials: {{projectName: p, region: us-east5, credentialsFile: {{secretRef: {{name: gcp-sa}}}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: gcp-sa, namespace: default}}
stringData: {{service_account.json: {json.dumps(key_file)}}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: azure, namespace: default}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: azure}}]
  type: AzureCredentials
  azureCredentials: {{clientID: e2e-client, tenantID: {TENANT}, clientSecretRef: {{name: azure-secret}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: azure-secret, namespace: default}}
stringData: {{client-secret: "{CLIENT_SECRET}"}}
"""


def manifests(upstreams_by_name, key_file, profile="bedrock"):
    # The AWS backend's body mutation lands in the body after translation: the signature must
    # cover the body as it leaves, not as the client sent it.
    aws_backend = openai_backend("aws", upstreams_by_name["aws"]).replace(
        "  schema: {name: OpenAI}\n",
        "  schema: {name: OpenAI}\n  bodyMutation: {set: [{path: temperature, value: '0.25'}]}\n")
    return (route([("bedrock-model", "aws"), ("gemini", "gcp"), ("gpt-azure", "azure")])
            + aws_backend + openai_backend("gcp", upstreams_by_name["gcp"])
            + openai_backend("azure", upstreams_by_name["azure"])
            + policies(key_file, profile))


@pytest.fixture
def cloud(tmp_path, upstreams, gateway):
    """A gateway with one backend per cloud credential, and the fake token endpoints."""
    endpoints = TokenEndpoints()
    ups = {name: upstreams(f"{name}-up") for name in ("aws", "gcp", "azure")}
    key_file = service_account(tmp_path, f"{endpoints.base}/token")
    text = manifests(ups, key_file)
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "gateway.yaml").write_text(text)
    gw = gateway(text, env={"AZURE_AUTHORITY_HOST": endpoints.base, "AIXDS_LOG": "debug"})
    for model in ("bedrock-model", "gemini", "gpt-azure"):
        gw.wait_serving(model)
    yield gw, ups, endpoints, key_file
    endpoints.stop()


def chat(gw, model, stream=False):
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=CLIENT_KEY, max_retries=5)
    messages = [{"role": "user", "content": "hello there"}]
    if stream:
        return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model=model, messages=messages, stream=True) if c.choices)
    return client.chat.completions.create(model=model, messages=messages).choices[0].message.content


def sdk_requests(upstream):
    return [r for r in upstream.recorded() if (r["body"] or {}).get("messages")]


def botocore_signature(received):
    """The signature botocore computes for the request as received, from the headers its
    Authorization names, with the keys the policy's profile holds."""
    authorization = received["headers"]["authorization"]
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    request = AWSRequest(method=received["method"],
                         url=f"https://{received['headers']['host']}{received['path']}",
                         data=base64.b64decode(received["raw"]),
                         headers={name: received["headers"][name] for name in signed})
    request.context["timestamp"] = received["headers"]["x-amz-date"]
    auth = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN), "bedrock", REGION)
    canonical = auth.canonical_request(request)
    return auth.signature(auth.string_to_sign(request, canonical), request), signed


def test_aws_requests_carry_a_sigv4_signature_botocore_verifies(cloud):
    gw, ups, _, _ = cloud
    assert chat(gw, "bedrock-model") == "Hello from aws-up"
    assert chat(gw, "bedrock-model", stream=True) == "Hello from aws-up"
    received = sdk_requests(ups["aws"])
    assert len(received) == 2
    for r in received:
        authorization = r["headers"]["authorization"]
        date = r["headers"]["x-amz-date"]
        assert authorization.startswith(
            f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{date[:8]}/{REGION}/bedrock/aws4_request, ")
        assert r["body"]["temperature"] == 0.25, "the body mutation was applied before signing"
        assert r["headers"]["x-amz-security-token"] == SESSION_TOKEN
        assert CLIENT_KEY not in json.dumps(r["headers"])
        expected, signed = botocore_signature(r)
        assert {"host", "content-type", "x-amz-date", "x-amz-security-token"} <= set(signed)
        assert authorization.endswith(f"Signature={expected}"), (authorization, expected)
        # A byte changed in the body would not verify: the signature covers it.
        tampered = dict(r, raw=base64.b64encode(base64.b64decode(r["raw"]) + b" ").decode())
        assert botocore_signature(tampered)[0] != expected


def test_gcp_and_azure_backends_get_issued_tokens_and_refreshed_ones(cloud):
    gw, ups, endpoints, _ = cloud
    for model, name in (("gemini", "gcp"), ("gpt-azure", "azure")):
        assert chat(gw, model) == f"Hello from {name}-up"
        first = sdk_requests(ups[name])[0]["headers"]["authorization"]
        assert first.startswith(f"Bearer {name}-e2e-token-"), first
        # Tokens live LIFETIME s and are refreshed at 80%: a later request carries a newer one.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            chat(gw, model)
            sent = [r["headers"]["authorization"] for r in sdk_requests(ups[name])]
            if sent[-1] != first:
                break
            time.sleep(0.2)
        number = lambda a: int(a.rsplit("-", 1)[1])
        assert number(sent[-1]) > number(first), sent
        assert number(sent[-1]) <= endpoints.issued[name]
        assert all(CLIENT_KEY not in json.dumps(r["headers"]) for r in sdk_requests(ups[name]))
    assert endpoints.problems == []
    metrics = gw.metrics()
    assert metrics['aixds_credential_token_fetches_total{type="GCPCredentials",result="ok"}'] >= 2


def secrets(key_file):
    key_lines = json.loads(key_file)["private_key"].splitlines()[1:-1]
    return [SECRET_KEY, SESSION_TOKEN, CLIENT_SECRET, "e2e-token-", *key_lines]


def test_no_secret_in_logs_debug_pages_validate_or_explain(cloud, tmp_path):
    gw, _, _, key_file = cloud
    chat(gw, "bedrock-model")
    chat(gw, "gemini")
    chat(gw, "gpt-azure")
    pages = {"/debug/graph": requests.get(f"{gw.aixds_admin}/debug/graph", timeout=5).text,
             "/metrics": requests.get(f"{gw.aixds_admin}/metrics", timeout=5).text}
    assert "BackendSecurityPolicy" in pages["/debug/graph"]
    validate = subprocess.run([aixds_bin(), "validate", str(tmp_path / "input")],
                              capture_output=True, text=True, timeout=60)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    pages["validate"] = validate.stdout + validate.stderr
    explain = subprocess.run(
        [aixds_bin(), "explain", "BackendSecurityPolicy/default/aws", str(tmp_path / "input")],
        capture_output=True, text=True, timeout=60)
    pages["explain"] = explain.stdout + explain.stderr
    assert "aws" in pages["explain"]
    pages["aixds.log"] = gw.log_path.read_text()
    assert "access token fetched" in pages["aixds.log"], "debug logging is on"
    for where, text in pages.items():
        for secret in secrets(key_file):
            assert secret not in text, f"{where} shows a secret"


def test_a_profile_without_keys_is_refused_naming_it_never_a_value(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    key_file = json.dumps({"type": "service_account", "client_email": "a@b",
                           "private_key": "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"})
    up = type("U", (), {"host": "127.0.0.1", "port": 9})()
    (bad / "gateway.yaml").write_text(
        manifests({"aws": up, "gcp": up, "azure": up}, key_file, profile="prod"))
    result = subprocess.run([aixds_bin(), "validate", str(bad)], capture_output=True, text=True,
                            timeout=60)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert '"credentials" has no profile [prod]' in out, out
    assert "not a usable RSA key" in out, out
    for secret in [SECRET_KEY, SESSION_TOKEN, CLIENT_SECRET, "c2VjcmV0"]:
        assert secret not in out
