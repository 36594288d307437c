#!/usr/bin/env python3
"""Fake Microsoft Entra ID token endpoint (OAuth2 client credentials), for aixds's
AzureCredentials tests.

    python e2e/providers/entra_token.py --id entra --tenant TENANT --client-id ID --client-secret SECRET \\
        [--scope https://cognitiveservices.azure.com/.default] [--token-lifetime SECONDS] [--record FILE]

`POST /{tenant}/oauth2/v2.0/token` takes the form fields `client_id`, `client_secret`, `scope` and
`grant_type=client_credentials`, checks every one of them (and the tenant in the path) and
answers `{"token_type": "Bearer", "expires_in", "ext_expires_in", "access_token"}`, or a 400/401
in Entra's error shape (`{"error", "error_description", "error_codes", ...}`). Each grant issues
a new token; `GET /tokens` lists them, so a test can match the Authorization header an upstream
received against them and see refreshes. `--fail-status N` fails every grant with N.
"""

import datetime
import os
import threading
import time
import uuid

from fakeserver import Handler, Refused, parser, serve

DEFAULT_SCOPE = "https://cognitiveservices.azure.com/.default"


def entra_error(status, error, code, description):
    return Refused(status, {
        "error": error,
        "error_description": f"AADSTS{code}: {description}",
        "error_codes": [code],
        "timestamp": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ"),
        "trace_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
    })


class EntraHandler(Handler):
    server_version = "fake-entra"

    def handle_get(self, path, query):
        if path != "/tokens":
            raise Refused(404, {"error": "not_found", "error_description": f"no route for GET {path}"})
        with self.server.lock:
            self.send_json(200, list(self.server.issued))

    def handle_post(self, path, query, raw):
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[1:] != ["oauth2", "v2.0", "token"]:
            raise Refused(404, {"error": "not_found", "error_description": f"no route for POST {path}"})
        if self.server.fail_status:
            raise entra_error(self.server.fail_status, "temporarily_unavailable", 90033,
                              f"simulated failure {self.server.fail_status}")
        if parts[0] != self.server.tenant:
            raise entra_error(400, "invalid_request", 90002, f"Tenant '{parts[0]}' not found.")
        form = self.recorded_body(raw) if "application/x-www-form-urlencoded" in self.headers.get("Content-Type", "") else None
        if not isinstance(form, dict):
            raise entra_error(400, "invalid_request", 900144, "The request body must be form-encoded.")
        for field in ("grant_type", "client_id", "client_secret", "scope"):
            if not form.get(field):
                raise entra_error(400, "invalid_request", 900144, f"The request body must contain '{field}'.")
        if form["grant_type"] != "client_credentials":
            raise entra_error(400, "unsupported_grant_type", 70003, "The grant type must be client_credentials.")
        if form["client_id"] != self.server.client_id:
            raise entra_error(400, "unauthorized_client", 700016,
                              f"Application '{form['client_id']}' was not found in tenant '{parts[0]}'.")
        if form["client_secret"] != self.server.client_secret:
            raise entra_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        if form["scope"] != self.server.scope:
            raise entra_error(400, "invalid_scope", 70011, f"The scope '{form['scope']}' is not valid here "
                                                          f"(expected '{self.server.scope}').")
        token = f"entra-fake-{uuid.uuid4().hex}"
        lifetime = self.server.token_lifetime
        with self.server.lock:
            self.server.issued.append({"access_token": token, "issued_at": int(time.time()), "expires_in": lifetime})
        self.send_json(200, {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
                             "access_token": token})


def main():
    p = parser(__doc__)
    p.add_argument("--tenant", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--client-secret", default=os.environ.get("AZURE_CLIENT_SECRET"),
                   help="defaults to $AZURE_CLIENT_SECRET")
    p.add_argument("--scope", default=DEFAULT_SCOPE)
    p.add_argument("--token-lifetime", type=int, default=3599, help="seconds an access token lasts")
    args = p.parse_args()
    if not args.client_secret:
        p.error("--client-secret (or $AZURE_CLIENT_SECRET) is required")
    serve(EntraHandler, args, tenant=args.tenant, client_id=args.client_id, client_secret=args.client_secret,
          scope=args.scope, token_lifetime=args.token_lifetime, issued=[], lock=threading.Lock())


if __name__ == "__main__":
    main()
