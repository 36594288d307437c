"""The Helm chart (charts/aixds), rendered and linted by Helm's own Go library (helm-python-sdk),
every rendered object validated against the Kubernetes OpenAPI schemas (kubernetes-validate,
strict: unknown fields fail), and what the chart says checked against the code: the
ClusterRole's rules are files/rbac-rules.yaml, the Envoy bootstrap is what `aixds bootstrap`
prints, and a real Envoy accepts it."""

import base64
import copy
import json
import socket
import ssl
import subprocess
import time

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import requests
import yaml

from conftest import REPO, aixds_bin, envoy_bin, free_port
from test_pool_picker import manifests as picker_manifests
from test_pool_picker import servers  # noqa: F401 (a fixture)

CHART = REPO / "charts" / "aixds"
RELEASE, NAMESPACE = "gw", "ai-gateway"
# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest the
# validator knows.
KUBE_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]

CUSTOM = {
    "replicaCount": 2,
    "image": {"repository": "mirror/aixds", "tag": "0.1.0-test", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "pull"}],
    "serviceAccount": {"name": "gateway-controller", "annotations": {"team": "ai"}},
    "ports": {"grpc": 18443, "admin": 19443},
    "service": {"type": "NodePort"},
    "listener": {"defaultPort": 8080},
    "leaderElection": {"leaseName": "aixds-leader"},
    "logging": {"format": "text", "level": "debug"},
    "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
    "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                  "limits": {"cpu": "2", "memory": "1Gi"}},
    "podAnnotations": {"prometheus.io/scrape": "true"},
    "podLabels": {"team": "ai"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "topologySpreadConstraints": [{
        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "control-plane"}}}],
    "tls": {"enabled": True, "secretName": "aixds-tls", "clientAuth": True,
            "envoySecretName": "envoy-tls", "serverName": "aixds.gateway.internal"},
    "envoy": {
        "enabled": True, "replicaCount": 3, "sotw": True, "adminPort": 9000, "concurrency": 2,
        "image": {"tag": "v1.40.1"},
        "service": {"type": "LoadBalancer", "annotations": {"lb": "internal"},
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080},
                              {"name": "https", "port": 443, "targetPort": 8443}]},
        "resources": {"requests": {"cpu": "1", "memory": "512Mi"}},
    },
}
VALUES = {"default": {}, "custom": CUSTOM}


def render(values):
    chart = helm.Chart.load(CHART)
    manifests = chart.render(copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE)
    return [doc for path, text in sorted(manifests.items()) if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def validate(obj, version):
    """Validates `obj` against Kubernetes `version`'s schema, failing with the offending field
    rather than the whole schema."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
        return
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path)
        problem = f"{obj['kind']}/{obj['metadata']['name']} at {where}: {e.message}"
    pytest.fail(problem[:2000])


def one(objects, kind, name):
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(found) == 1, f"{kind}/{name} among {names}"
    return found[0]


def container(deployment, name):
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == name)


@pytest.mark.parametrize("values", VALUES.values(), ids=VALUES.keys())
def test_helm_lint_passes(values):
    report = helm.lint(CHART, copy.deepcopy(values), strict=True, namespace=NAMESPACE,
                       kube_version=f"v{KUBE_VERSIONS[0]}")
    assert report["errors"] == []
    # Severity 1 is informational (the chart has no icon); 2 and up are warnings and errors.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", VALUES.values(), ids=VALUES.keys())
def test_every_rendered_object_matches_the_kubernetes_schemas(values, version):
    objects = render(values)
    kinds = {o["kind"] for o in objects}
    expected = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
                "Deployment", "Service"}
    if values.get("envoy", {}).get("enabled"):
        expected.add("ConfigMap")
    if values.get("replicaCount", 1) > 1:
        expected.add("PodDisruptionBudget")
    if not values.get("tls", {}).get("secretName"):
        expected.add("Secret")
    assert kinds == expected
    # Every kind the chart renders is built in, so none is skipped for want of a schema.
    for obj in objects:
        validate(obj, version)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_crds_are_valid_customresourcedefinitions(version):
    crds = helm.Chart.load(CHART).crds
    assert len(crds) == len(list((CHART / "crds").iterdir()))
    for crd in crds:
        obj = yaml.safe_load(crd["data"])
        assert obj["apiVersion"] == "apiextensions.k8s.io/v1"
        assert obj["kind"] == "CustomResourceDefinition"
        validate(obj, version)


@pytest.mark.parametrize("values", VALUES.values(), ids=VALUES.keys())
def test_clusterrole_rules_are_the_rbac_file_and_leases_are_namespaced(values):
    objects = render(values)
    name = f"{RELEASE}-aixds"
    sa = values.get("serviceAccount", {}).get("name") or name
    file_rules = yaml.safe_load((CHART / "files" / "rbac-rules.yaml").read_text())
    cluster_role = one(objects, "ClusterRole", name)
    assert cluster_role["rules"] == file_rules
    binding = one(objects, "ClusterRoleBinding", name)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": name}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    one(objects, "ServiceAccount", sa)

    # Cluster-wide, aixds writes nothing but status subresources and events.
    for rule in cluster_role["rules"]:
        if set(rule["verbs"]) - {"get", "list", "watch"}:
            assert all(r.endswith("/status") or r == "events" for r in rule["resources"]), rule
        assert "leases" not in rule["resources"]

    role = one(objects, "Role", f"{name}-leader-election")
    assert role["metadata"]["namespace"] == NAMESPACE
    lease = values.get("leaderElection", {}).get("leaseName") or name
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": [lease], "verbs": ["get", "update"]},
    ]
    role_binding = one(objects, "RoleBinding", f"{name}-leader-election")
    assert role_binding["metadata"]["namespace"] == NAMESPACE
    assert role_binding["roleRef"]["kind"] == "Role"
    assert role_binding["subjects"] == binding["subjects"]
    deployment = one(objects, "Deployment", name)
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == sa
    assert f"--lease-name={lease}" in container(deployment, "aixds")["args"]


def assert_hardened(pod_spec, c):
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["runAsUser"] > 0
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in sc


@pytest.mark.parametrize("values", VALUES.values(), ids=VALUES.keys())
def test_aixds_pods_are_probed_hardened_and_served(values):
    objects = render(values)
    name = f"{RELEASE}-aixds"
    deployment = one(objects, "Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    aixds = container(deployment, "aixds")
    assert deployment["spec"]["replicas"] == values.get("replicaCount", 1)
    assert aixds["resources"] == values.get("resources", {
        "requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}})
    assert_hardened(pod, aixds)

    ports = {p["name"]: p["containerPort"] for p in aixds["ports"]}
    want = {"grpc": 18000, "picker": 9002, "admin": 19000, **values.get("ports", {})}
    assert ports == want
    assert aixds["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert aixds["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    args = aixds["args"]
    assert args[0] == "serve"
    for flag, port in [("xds", "grpc"), ("picker", "picker"), ("admin", "admin")]:
        assert f"--{flag}-address=0.0.0.0:{want[port]}" in args

    # One Service with every port, one headless Service that resolves to each replica.
    service = one(objects, "Service", name)
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        n: (p, n) for n, p in want.items()}
    headless = one(objects, "Service", f"{name}-grpc")
    assert headless["spec"]["clusterIP"] == "None"
    assert [(p["port"], p["targetPort"]) for p in headless["spec"]["ports"]] == [
        (want["grpc"], "grpc")]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for svc in (service, headless):
        assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    if deployment["spec"]["replicas"] > 1:
        assert [b["spec"] for b in budgets] == [
            {"maxUnavailable": 1, "selector": deployment["spec"]["selector"]}]
    else:
        assert budgets == []


def test_aixds_programs_the_gateways_of_its_controller_name_and_reports_the_envoy_service():
    deployment = one(render({}), "Deployment", f"{RELEASE}-aixds")
    args = container(deployment, "aixds")["args"]
    assert "--controller-name=aixds.io/gateway-controller" in args
    assert not any(a.startswith("--gateway-service") for a in args), "no Envoy, no address"

    values = {"controllerName": "example.com/ai", "gatewayClass": {"create": True, "name": "ai"},
              "envoy": {"enabled": True}}
    objects = render(values)
    args = container(one(objects, "Deployment", f"{RELEASE}-aixds"), "aixds")["args"]
    assert "--controller-name=example.com/ai" in args
    assert f"--gateway-service={NAMESPACE}/{RELEASE}-aixds-envoy" in args
    one(objects, "Service", f"{RELEASE}-aixds-envoy")
    gateway_class = one(objects, "GatewayClass", "ai")
    assert gateway_class["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert gateway_class["spec"]["controllerName"] == "example.com/ai"


def test_tls_mounts_the_secret_and_serves_with_it():
    for values, secret in [(CUSTOM, "aixds-tls"), ({}, f"{RELEASE}-aixds-tls")]:
        deployment = one(render(values), "Deployment", f"{RELEASE}-aixds")
        aixds = container(deployment, "aixds")
        assert {"--tls-cert=/etc/aixds/tls/tls.crt", "--tls-key=/etc/aixds/tls/tls.key",
                "--tls-client-ca=/etc/aixds/tls/ca.crt"} <= set(aixds["args"])
        assert "--insecure-grpc" not in aixds["args"]
        assert aixds["volumeMounts"] == [{"name": "tls", "mountPath": "/etc/aixds/tls",
                                          "readOnly": True}]
        assert deployment["spec"]["template"]["spec"]["volumes"] == [
            {"name": "tls", "secret": {"secretName": secret}}]


def test_unauthenticated_grpc_needs_the_insecure_opt_out_by_name():
    for values in [{"tls": {"enabled": False}}, {"tls": {"clientAuth": False}}]:
        with pytest.raises(helm.HelmRenderError, match="insecureGrpc"):
            render(values)
        deployment = one(render({**values, "insecureGrpc": True}), "Deployment",
                         f"{RELEASE}-aixds")
        assert "--insecure-grpc" in container(deployment, "aixds")["args"]
    with pytest.raises(helm.HelmRenderError, match="tls.envoySecretName"):
        render({"tls": {"secretName": "s"}, "envoy": {"enabled": True}})


def test_pods_drain_within_their_grace_period():
    deployment = one(render({"drain": {"delaySeconds": 4, "timeoutSeconds": 20}}), "Deployment",
                     f"{RELEASE}-aixds")
    args = container(deployment, "aixds")["args"]
    assert {"--drain-delay=4", "--drain-timeout=20"} <= set(args)
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 29


def test_rate_limit_counters_go_to_the_redis_a_secret_names():
    deployment = one(render({}), "Deployment", f"{RELEASE}-aixds")
    aixds = container(deployment, "aixds")
    assert not any(e["name"] == "AIXDS_RATELIMIT_REDIS" for e in aixds["env"]), "in memory"
    values = {"rateLimit": {"redis": {"urlSecretName": "redis-url", "timeoutMilliseconds": 50},
                            "failClosed": True}}
    aixds = container(one(render(values), "Deployment", f"{RELEASE}-aixds"), "aixds")
    env = next(e for e in aixds["env"] if e["name"] == "AIXDS_RATELIMIT_REDIS")
    assert env["valueFrom"]["secretKeyRef"] == {"name": "redis-url", "key": "url"}
    assert {"--ratelimit-redis-timeout=50", "--ratelimit-fail-closed"} <= set(aixds["args"])


def secret_files(objects, name, directory):
    """Writes Secret `name`'s data to files in `directory`."""
    directory.mkdir()
    for key, value in one(objects, "Secret", name)["data"].items():
        (directory / key).write_bytes(base64.b64decode(value))
    return directory


def test_generated_certificates_chain_to_one_ca_and_name_the_service(tmp_path):
    objects = render({"envoy": {"enabled": True}})
    server = secret_files(objects, f"{RELEASE}-aixds-tls", tmp_path / "server")
    client = secret_files(objects, f"{RELEASE}-aixds-envoy-tls", tmp_path / "client")
    assert (server / "ca.crt").read_bytes() == (client / "ca.crt").read_bytes()
    for directory, purpose in [(server, "sslserver"), (client, "sslclient")]:
        result = subprocess.run(["openssl", "verify", "-purpose", purpose, "-CAfile",
                                 directory / "ca.crt", directory / "tls.crt"],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    text = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                           server / "tls.crt"], capture_output=True, text=True, check=True).stdout
    assert f"DNS:{RELEASE}-aixds-grpc.{NAMESPACE}.svc.cluster.local" in text
    # Both Deployments roll when the certificates change.
    checksums = {one(objects, "Deployment", name)["spec"]["template"]["metadata"]["annotations"]
                 ["checksum/tls"] for name in (f"{RELEASE}-aixds", f"{RELEASE}-aixds-envoy")}
    assert len(checksums) == 1


def test_images_name_no_registry_host():
    for values in VALUES.values():
        for obj in render(values):
            if obj["kind"] != "Deployment":
                continue
            for c in obj["spec"]["template"]["spec"]["containers"]:
                first = c["image"].split("/")[0]
                assert "/" not in c["image"] or ("." not in first and ":" not in first), c["image"]


ENVOY_CASES = {
    "default": {"envoy": {"enabled": True}},
    "insecure": {"envoy": {"enabled": True}, "tls": {"enabled": False}, "insecureGrpc": True},
    "tls": {"envoy": {"enabled": True},
            "tls": {"enabled": True, "secretName": "s", "envoySecretName": "e"}},
    "custom": CUSTOM,
}


def bootstrap_args(values):
    """The `aixds bootstrap` arguments for the inputs the chart's bootstrap is made from."""
    envoy = values["envoy"]
    grpc = values.get("ports", {}).get("grpc", 18000)
    args = ["--xds-address", f"{RELEASE}-aixds-grpc.{NAMESPACE}.svc.cluster.local:{grpc}",
            "--envoy-admin-port", str(envoy.get("adminPort", 9901))]
    if envoy.get("sotw"):
        args.append("--sotw")
    tls = values.get("tls", {})
    if tls.get("enabled", True):
        args += ["--tls-ca", "/etc/envoy/tls/ca.crt"]
        if tls.get("clientAuth", True):
            args += ["--tls-client-cert", "/etc/envoy/tls/tls.crt",
                     "--tls-client-key", "/etc/envoy/tls/tls.key"]
        if tls.get("serverName"):
            args += ["--tls-server-name", tls["serverName"]]
    return args


def certificates(directory):
    """A self-signed certificate and key in `directory`, for Envoy to load."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", "tls.key", "-out", "tls.crt", "-days", "1", "-subj", "/CN=test"],
        cwd=directory, check=True, capture_output=True)
    (directory / "ca.crt").write_bytes((directory / "tls.crt").read_bytes())


@pytest.mark.parametrize("values", ENVOY_CASES.values(), ids=ENVOY_CASES.keys())
def test_envoy_bootstrap_is_what_aixds_bootstrap_prints_and_envoy_accepts_it(values, tmp_path):
    objects = render(values)
    config_map = one(objects, "ConfigMap", f"{RELEASE}-aixds-envoy-bootstrap")
    rendered = config_map["data"]["bootstrap.yaml"]
    printed = subprocess.run([aixds_bin(), "bootstrap", *bootstrap_args(values)],
                             check=True, capture_output=True, text=True).stdout
    assert yaml.safe_load(rendered) == yaml.safe_load(printed)

    # Envoy reads the files at /etc/envoy/tls from the mounted Secret; here from tmp_path.
    certificates(tmp_path)
    path = tmp_path / "bootstrap.yaml"
    path.write_text(rendered.replace("/etc/envoy/tls/", f"{tmp_path}/"))
    result = subprocess.run([envoy_bin(), "--mode", "validate", "-c", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

    deployment = one(objects, "Deployment", f"{RELEASE}-aixds-envoy")
    pod = deployment["spec"]["template"]["spec"]
    envoy = container(deployment, "envoy")
    assert_hardened(pod, envoy)
    assert pod["automountServiceAccountToken"] is False
    assert "--config-path=/etc/envoy/bootstrap/bootstrap.yaml" in envoy["args"]
    bootstrap_volume = {"name": "bootstrap",
                        "configMap": {"name": config_map["metadata"]["name"]}}
    assert bootstrap_volume in pod["volumes"]
    assert deployment["spec"]["replicas"] == values["envoy"].get("replicaCount", 1)
    service_ports = values["envoy"].get("service", {}).get(
        "ports", [{"name": "http", "port": 80, "targetPort": 1975}])
    assert [(p["name"], p["containerPort"]) for p in envoy["ports"]] == [
        (p["name"], p["targetPort"]) for p in service_ports]
    assert envoy["readinessProbe"]["tcpSocket"] == {"port": service_ports[0]["targetPort"]}
    service = one(objects, "Service", f"{RELEASE}-aixds-envoy")
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        (p["port"], p["name"]) for p in service_ports]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    tls = values.get("tls", {})
    if tls.get("enabled", True):
        secret = tls.get("envoySecretName", f"{RELEASE}-aixds-envoy-tls")
        assert {"name": "tls", "secret": {"secretName": secret}} in pod["volumes"]


def wait_for(check, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def assert_refuses_strangers(port, ca, server_name):
    """A caller that trusts `ca` but has no client certificate, and one in clear text, get no
    HTTP/2 answer on `port`."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            with context.wrap_socket(raw, server_hostname=server_name) as tls:
                tls.sendall(preface)
                if not tls.recv(65536):
                    raise ConnectionResetError("closed without an answer")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(preface)
        raw.settimeout(5)
        try:
            answer = raw.recv(65536)
        except (ConnectionResetError, socket.timeout):
            answer = b""
        assert not answer.startswith(bytes([0, 0])), answer[:40]


def test_with_chart_defaults_only_the_charts_envoy_can_call_aixds(tmp_path, servers):
    """aixds with the chart's default flags and generated certificates, and an Envoy with the
    chart's bootstrap and client certificate (the Service name swapped for 127.0.0.1): Envoy
    gets its config and reaches the endpoint picker of a pool; a caller without the client
    certificate gets nothing from either port."""
    objects = render({"envoy": {"enabled": True}})
    server = secret_files(objects, f"{RELEASE}-aixds-tls", tmp_path / "server")
    client = secret_files(objects, f"{RELEASE}-aixds-envoy-tls", tmp_path / "client")
    args = container(one(objects, "Deployment", f"{RELEASE}-aixds"), "aixds")["args"]
    tls_args = [a.replace("/etc/aixds/tls/", f"{server}/").replace("/etc/envoy/tls/", f"{client}/")
                for a in args if a.startswith("--tls")]
    assert len(tls_args) == 6, tls_args
    grpc, picker, listener, admin = free_port(), free_port(), free_port(), free_port()
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    pod_port, _ = servers
    (manifests / "gateway.yaml").write_text(picker_manifests(pod_port, picker))
    aixds = subprocess.Popen(
        [aixds_bin(), "run", str(manifests), "--no-envoy", "--xds-address", f"127.0.0.1:{grpc}",
         "--admin-address", f"127.0.0.1:{free_port()}", "--picker-address", f"127.0.0.1:{picker}",
         "--listener-address", "127.0.0.1", "--default-port", str(listener), *tls_args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bootstrap = yaml.safe_load(
        one(objects, "ConfigMap", f"{RELEASE}-aixds-envoy-bootstrap")["data"]["bootstrap.yaml"]
        .replace("/etc/envoy/tls/", f"{client}/"))
    cluster = bootstrap["static_resources"]["clusters"][0]
    cluster["type"] = "STATIC"
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    endpoint["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": grpc}
    bootstrap["admin"]["address"]["socket_address"]["port_value"] = admin
    envoy = subprocess.Popen(
        [envoy_bin(), "--config-yaml", json.dumps(bootstrap), "--disable-hot-restart",
         "--concurrency", "1", "--log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def served():
            try:
                r = requests.post(f"http://127.0.0.1:{listener}/v1/chat/completions",
                                  json={"model": "llama-backend",
                                        "messages": [{"role": "user", "content": "hi"}]},
                                  timeout=5)
            except requests.RequestException:
                return False
            return r.status_code == 200 and "x-gateway-destination-endpoint-served" in r.headers
        # The pool's picker fails closed: a 200 means Envoy reached it with its certificate.
        wait_for(served, "a pool request picked over mutual TLS")
        host = f"{RELEASE}-aixds-grpc.{NAMESPACE}.svc.cluster.local"
        assert_refuses_strangers(grpc, server / "ca.crt", host)
        assert_refuses_strangers(picker, server / "ca.crt", host)
    finally:
        envoy.terminate()
        aixds.terminate()
        envoy.wait(timeout=10)
        aixds.wait(timeout=40)
