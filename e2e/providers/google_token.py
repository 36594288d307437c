#!/usr/bin/env python3
"""Fake Google OAuth2 token endpoint for service accounts (the JWT bearer grant), for aixds's
Vertex AI tests.

    python e2e/providers/google_token.py --id google-token --service-account KEY.json \\
        [--token-secret S] [--token-lifetime SECONDS] [--audience URL] [--record FILE]

`POST /token` takes the form `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=JWT`.
The JWT must be RS256-signed by the private key of one of the service accounts given (verified
with its public key), with `iss` its client_email, `aud` this endpoint's URL (as the request
reaches it, or an `--audience`), a `scope` including cloud-platform, and `iat`/`exp` around now
and at most an hour apart. Anything else is a 400 in Google's OAuth error shape
(`{"error", "error_description"}`). The answer is `{"access_token", "expires_in", "token_type":
"Bearer"}`; tokens last `--token-lifetime` seconds (3600 by default; short ones let tests see
refreshes) and are HMAC-signed with `--token-secret`, so that a Vertex fake started with the same
secret (e2e/providers/vertex.py, which also serves this endpoint itself) accepts them until they
expire. `GET /tokens` lists the tokens issued so far; `--fail-status N` fails every grant with N.

`write_service_account(path, token_uri)` writes a service-account key JSON with a fresh RSA key
(no private key is committed anywhere) whose `token_uri` points at this endpoint.
"""

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
import uuid
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from fakeserver import Handler, Refused, parser, serve

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
MAX_LIFETIME = 3600
CLOCK_SKEW = 60


def write_service_account(path, token_uri, client_email="aixds-test@aixds-test.iam.gserviceaccount.com",
                          project_id="aixds-test"):
    """Writes a service-account key JSON with a new 2048-bit RSA key to `path`; returns it as a dict."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    account = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": uuid.uuid4().hex,
        "private_key": pem,
        "client_email": client_email,
        "client_id": str(int(uuid.uuid4().int % 10**21)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/" + client_email,
        "universe_domain": "googleapis.com",
    }
    Path(path).write_text(json.dumps(account, indent=2))
    os.chmod(path, 0o600)
    return account


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class GrantError(Exception):
    def __init__(self, error, description):
        super().__init__(description)
        self.error = error
        self.description = description


class TokenIssuer:
    """Verifies JWT bearer grants from known service accounts and issues self-verifying access
    tokens (`ya29.fake.<claims>.<hmac>`), remembering what it issued."""

    def __init__(self, key_files, secret, lifetime, audiences=()):
        self.accounts = {}
        for key_file in key_files:
            account = json.loads(Path(key_file).read_text())
            key = serialization.load_pem_private_key(account["private_key"].encode(), password=None)
            self.accounts[account["client_email"]] = (account["private_key_id"], key.public_key())
        self.secret = secret.encode()
        self.lifetime = lifetime
        self.audiences = set(audiences)
        self.issued = []
        self.lock = threading.Lock()

    def grant(self, form, url):
        """The token response to a token request's `form` fields, received at `url`; raises
        `GrantError`."""
        if form.get("grant_type") != JWT_BEARER:
            raise GrantError("unsupported_grant_type", f"grant_type must be {JWT_BEARER}")
        assertion = form.get("assertion")
        if not assertion:
            raise GrantError("invalid_request", "missing assertion")
        claims = self.verify(assertion, {url} | self.audiences)
        now = int(time.time())
        payload = b64url(json.dumps({"sub": claims["iss"], "exp": now + self.lifetime,
                                     "jti": uuid.uuid4().hex}).encode())
        token = f"ya29.fake.{payload}.{self.mac(payload)}"
        with self.lock:
            self.issued.append({"access_token": token, "client_email": claims["iss"], "issued_at": now,
                                "expires_in": self.lifetime})
        return {"access_token": token, "expires_in": self.lifetime, "token_type": "Bearer"}

    def verify(self, assertion, audiences):
        """The claims of a valid assertion."""
        try:
            header_b64, claims_b64, signature_b64 = assertion.split(".")
            header = json.loads(b64url_decode(header_b64))
            claims = json.loads(b64url_decode(claims_b64))
            signature = b64url_decode(signature_b64)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise GrantError("invalid_grant", "Invalid JWT: not three base64url parts of JSON") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise GrantError("invalid_grant", "Invalid JWT: header and claims must be JSON objects")
        if header.get("alg") != "RS256":
            raise GrantError("invalid_grant", "Invalid JWT: alg must be RS256")
        account = self.accounts.get(claims.get("iss"))
        if account is None:
            raise GrantError("invalid_grant", f"Invalid grant: account {claims.get('iss')!r} not found")
        key_id, public_key = account
        if "kid" in header and header["kid"] != key_id:
            raise GrantError("invalid_grant", "Invalid JWT: kid is not the service account's key id")
        try:
            public_key.verify(signature, f"{header_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise GrantError("invalid_grant", "Invalid JWT Signature.") from None
        if claims.get("aud") not in audiences:
            raise GrantError("invalid_grant", f"Invalid JWT: aud must be the token URL ({', '.join(sorted(audiences))})")
        if CLOUD_PLATFORM not in str(claims.get("scope", "")).split():
            raise GrantError("invalid_scope", f"scope must include {CLOUD_PLATFORM}")
        iat, exp, now = claims.get("iat"), claims.get("exp"), time.time()
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (iat, exp)):
            raise GrantError("invalid_grant", "Invalid JWT: iat and exp must be integers")
        if iat > now + CLOCK_SKEW or exp < now - CLOCK_SKEW or exp <= iat or exp - iat > MAX_LIFETIME:
            raise GrantError("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                                              "reasonable timeframe. Check your iat and exp values.")
        return claims

    def mac(self, payload):
        return hmac.new(self.secret, payload.encode(), hashlib.sha256).hexdigest()

    def check(self, token):
        """Whether `token` is one this issuer (or another with the same secret) issued and that
        has not expired."""
        parts = token.split(".")
        if len(parts) != 4 or parts[:2] != ["ya29", "fake"] or not token.isascii():
            return False
        if not hmac.compare_digest(self.mac(parts[2]), parts[3]):
            return False
        return json.loads(b64url_decode(parts[2]))["exp"] > time.time()


class TokenHandler(Handler):
    """Serves the token endpoint; vertex.py's handler extends it."""

    server_version = "fake-google-token"

    def handle_get(self, path, query):
        if path != "/tokens":
            raise Refused(404, {"error": "not_found", "error_description": f"no route for GET {path}"})
        with self.server.issuer.lock:
            self.send_json(200, list(self.server.issuer.issued))

    def handle_post(self, path, query, raw):
        if path != "/token":
            raise Refused(404, {"error": "not_found", "error_description": f"no route for POST {path}"})
        self.token(raw)

    def token(self, raw):
        if self.server.fail_status:
            raise Refused(self.server.fail_status, {"error": "temporarily_unavailable", "error_description":
                                                    f"simulated failure {self.server.fail_status}"})
        form = self.recorded_body(raw) if "application/x-www-form-urlencoded" in self.headers.get("Content-Type", "") else None
        if not isinstance(form, dict):
            raise Refused(400, {"error": "invalid_request",
                                "error_description": "the body must be application/x-www-form-urlencoded"})
        try:
            answer = self.server.issuer.grant(form, f"http://{self.headers.get('Host', '')}{self.path}")
        except GrantError as err:
            raise Refused(400, {"error": err.error, "error_description": err.description}) from None
        self.send_json(200, answer, {"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate"})


def add_token_arguments(p):
    p.add_argument("--service-account", action="append", default=[], metavar="KEY.json",
                   help="a service-account key file whose grants to accept (repeatable)")
    p.add_argument("--token-secret", default=None,
                   help="HMAC secret of the access tokens (random when unset; give the same to vertex.py)")
    p.add_argument("--token-lifetime", type=int, default=3600, help="seconds an access token lasts")
    p.add_argument("--audience", action="append", default=[], help="another accepted JWT aud (repeatable)")


def issuer_from(args):
    return TokenIssuer(args.service_account, args.token_secret or secrets.token_hex(16), args.token_lifetime,
                       args.audience)


def main():
    p = parser(__doc__)
    add_token_arguments(p)
    args = p.parse_args()
    serve(TokenHandler, args, issuer=issuer_from(args))


if __name__ == "__main__":
    main()
