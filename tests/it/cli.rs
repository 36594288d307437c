//! The `aixds` binary as a user runs it.

use std::process::Command;

use crate::compat::compat_dir;

pub(crate) fn aixds(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_aixds"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run aixds");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_examples_succeeds() {
    let (code, stdout, _) = aixds(&["validate", "examples/"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("AIGatewayRoute/default/quickstart (examples/quickstart.yaml:15)"));
    assert!(stdout.ends_with(
        "0 not accepted, 0 with unresolved references; 0 documents skipped; 0 file errors\n"
    ));
}

#[test]
fn validate_fails_on_a_rejected_object_and_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {name: b}\nspec:\n  backendRef: {name: svc}\n",
    )
    .unwrap();
    let (code, stdout, _) = aixds(&["validate", "-o", "json", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["ok"], false);
    let condition = &json["objects"][0]["conditions"][0];
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "InvalidKind");
}

#[test]
fn validate_reports_missing_paths_clearly() {
    let (code, stdout, stderr) = aixds(&["validate", "examples/", "no/such/dir"]);
    assert_eq!(code, 2, "{stdout}");
    assert!(stderr.contains("no/such/dir: No such file or directory"), "{stderr}");
    assert_eq!(stdout, "", "nothing was checked");
}

/// A reference to an object in none of the files fails validation, naming what is missing; with
/// the object supplied the same files pass.
#[test]
fn validate_fails_on_an_unresolved_reference() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("route.yaml"),
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {name: r}\n\
         spec:\n  rules:\n  - matches: [{headers: [{name: x-ai-eg-model, value: m}]}]\n    \
         backendRefs: [{name: b}]\n",
    )
    .unwrap();
    let path = dir.path().to_str().unwrap();
    for output in ["text", "json"] {
        let (code, stdout, _) = aixds(&["validate", "-o", output, path]);
        assert_eq!(code, 1, "{stdout}");
        assert!(stdout.contains("AIServiceBackend default/b not found"), "{stdout}");
    }
    let (_, stdout, _) = aixds(&["validate", path]);
    assert!(
        stdout.ends_with("1 objects: 0 not accepted, 1 with unresolved references; 0 documents skipped; 0 file errors\n"),
        "{stdout}"
    );

    std::fs::write(
        dir.path().join("backend.yaml"),
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {name: b}\n\
         spec: {schema: {name: OpenAI}, backendRef: {name: b, group: gateway.envoyproxy.io, kind: Backend}}\n\
         ---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: b}\n\
         spec: {endpoints: [{ip: {address: 127.0.0.1, port: 8080}}]}\n",
    )
    .unwrap();
    let (code, stdout, _) = aixds(&["validate", path]);
    assert_eq!(code, 0, "{stdout}");
}

/// A file that is not YAML is a problem in the manifests (exit 1, with its file and line); a
/// file that cannot be read at all is unreadable input (exit 2). Either way the other files are
/// reported.
#[test]
fn validate_tells_bad_yaml_from_an_unreadable_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: k}\nstringData: {apiKey: one}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("b.yaml"), "apiVersion: v1\nkind: Secret\nmetadata: [name: k\n")
        .unwrap();
    let (code, stdout, _) = aixds(&["validate", path]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains(&format!("error: {path}/b.yaml:")), "{stdout}");
    assert!(stdout.contains(&format!("Secret/default/k ({path}/a.yaml:1)")), "{stdout}");

    std::fs::write(dir.path().join("b.yaml"), b"apiVersion: v1\nkind: \xff\xfe\n").unwrap();
    let (code, stdout, _) = aixds(&["validate", path]);
    assert_eq!(code, 2, "{stdout}");
    assert!(stdout.contains(&format!("error: {path}/b.yaml:1: cannot read: ")), "{stdout}");
    assert!(stdout.contains(&format!("Secret/default/k ({path}/a.yaml:1)")), "{stdout}");
    let (code, stdout, _) = aixds(&["validate", "-o", "json", path]);
    assert_eq!(code, 2, "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["ok"], false);
}

#[test]
fn validate_help_lists_the_exit_codes() {
    let (code, stdout, _) = aixds(&["validate", "--help"]);
    assert_eq!(code, 0);
    for line in
        ["  0  every object", "  1  a problem in the manifests", "  2  the input cannot be read"]
    {
        assert!(stdout.contains(line), "{line:?} in {stdout}");
    }
}

/// Our own fixture sets validate cleanly, as a user would run them.
#[test]
fn validate_fixture_sets_succeeds() {
    for set in [
        "tests/fixtures/manifests/basic",
        "tests/fixtures/manifests/inference-pool",
        "tests/fixtures/manifests/aws",
        "tests/fixtures/manifests/gcp",
        "tests/fixtures/manifests/cohere",
    ] {
        let (code, stdout, _) = aixds(&["validate", set]);
        assert_eq!(code, 0, "{set}: {stdout}");
    }
}

/// The upstream InferencePool route names a pool that is in none of its files: it fails until
/// the pool is supplied.
#[test]
fn validate_upstream_pool_route_passes_once_its_pool_is_supplied() {
    let Some(compat) = compat_dir() else { return };
    let base = compat.join("inference-pool-base.yaml");
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool.yaml");
    std::fs::write(
        &pool,
        "apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\n\
         metadata: {name: vllm-llama3-8b-instruct, namespace: default}\n\
         spec: {targetPorts: [{number: 8000}], selector: {matchLabels: {app: vllm-llama3}}}\n",
    )
    .unwrap();
    // Upstream's AIGatewayRoute to the pool, and its HTTPRoute to the pool.
    for route in ["inference-pool-aigwroute.yaml", "inference-pool-httproute.yaml"] {
        let route = compat.join(route);
        let (base, route) = (base.to_str().unwrap(), route.to_str().unwrap());
        let (code, stdout, _) = aixds(&["validate", base, route]);
        assert_eq!(code, 1, "{stdout}");
        assert!(
            stdout.contains(
                "ResolvedRefs=False BackendNotFound: InferencePool default/vllm-llama3-8b-instruct not found"
            ),
            "{route}: {stdout}"
        );
        let (code, stdout, _) = aixds(&["validate", base, route, pool.to_str().unwrap()]);
        assert_eq!(code, 0, "{route}: {stdout}");
    }
}

#[test]
fn graph_formats() {
    let (code, dot, _) = aixds(&["graph", "examples/", "--format", "dot"]);
    assert_eq!(code, 0);
    assert!(dot.starts_with("digraph aixds {"));
    assert!(dot.contains(
        "\"AIGatewayRoute/default/quickstart\" -> \"AIServiceBackend/default/upstream-a\" [label=\"backendRef\"];"
    ));
    let (code, json, _) = aixds(&["graph", "examples/"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        json["nodes"].as_array().unwrap().len(),
        7,
        "the GatewayClass the Gateway names is a placeholder"
    );
    assert_eq!(json["edges"].as_array().unwrap().len(), 6);
}

#[test]
fn crds_print_every_definition() {
    let (code, yaml, _) = aixds(&["crds"]);
    assert_eq!(code, 0);
    assert_eq!(yaml.matches("kind: CustomResourceDefinition").count(), 7);
}

#[test]
fn bootstrap_is_accepted_by_envoy() {
    for extra in [&[][..], &["--sotw"][..], &["--xds-address", "aixds.aixds-system.svc:18000"][..]]
    {
        let (code, yaml, stderr) = aixds(&[&["bootstrap"][..], extra].concat());
        assert_eq!(code, 0, "{stderr}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bootstrap.yaml");
        std::fs::write(&file, &yaml).unwrap();
        let out = Command::new(crate::harness::envoy_bin())
            .args(["--mode", "validate", "--disable-hot-restart", "-c"])
            .arg(&file)
            .output()
            .expect("run envoy (bash hack/install.sh)");
        assert!(out.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn bootstrap_over_tls_is_accepted_by_envoy_and_tls_flags_come_with_their_partners() {
    let dir = tempfile::tempdir().unwrap();
    let certs = crate::tls::certificates(dir.path());
    let path = |f: &str| certs.join(f).to_string_lossy().into_owned();
    let (ca, cert, key) = (path("ca.crt"), path("client.crt"), path("client.key"));
    let (code, yaml, stderr) = aixds(&[
        "bootstrap",
        "--xds-address",
        "aixds-grpc.aixds.svc.cluster.local:18000",
        "--tls-ca",
        &ca,
        "--tls-client-cert",
        &cert,
        "--tls-client-key",
        &key,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(yaml.contains("UpstreamTlsContext") && yaml.contains(&ca), "{yaml}");
    let file = dir.path().join("bootstrap.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let out = Command::new(crate::harness::envoy_bin())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&file)
        .output()
        .expect("run envoy (bash hack/install.sh)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let (code, _, stderr) = aixds(&["bootstrap", "--tls-client-cert", &cert]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--tls-ca") && stderr.contains("--tls-client-key"), "{stderr}");
    let local = ["--xds-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0"];
    let missing = dir.path().join("missing.crt").to_string_lossy().into_owned();
    let (code, _, stderr) = aixds(
        &[
            &["run", "examples/", "--no-envoy", "--tls-cert", &missing, "--tls-key", &key][..],
            &["--tls-client-ca", &ca, "--no-picker"],
            &local,
        ]
        .concat(),
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("reading the TLS certificate") && stderr.contains(&missing),
        "{stderr}"
    );
}

#[test]
fn graph_focus_narrows_the_output() {
    let (code, json, stderr) = aixds(&[
        "graph",
        "examples/",
        "--focus",
        "AIServiceBackend/default/upstream-a",
        "--depth",
        "1",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let keys: Vec<&str> =
        json["nodes"].as_array().unwrap().iter().map(|n| n["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "AIGatewayRoute/default/quickstart",
            "AIServiceBackend/default/upstream-a",
            "Backend/default/upstream-a"
        ]
    );
    let (code, _, stderr) = aixds(&["graph", "examples/", "--focus", "Backend/default/nope"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("Backend/default/nope is not in the graph"), "{stderr}");
    let (code, _, stderr) = aixds(&["graph", "examples/", "--focus", "nonsense"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("is not Kind/namespace/name"), "{stderr}");
}

#[test]
fn explain_prints_conditions_references_and_resources() {
    let (code, text, stderr) =
        aixds(&["explain", "AIServiceBackend/default/upstream-a", "examples/"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        text.starts_with("AIServiceBackend/default/upstream-a (examples/quickstart.yaml:"),
        "{text}"
    );
    for line in [
        "  Accepted=True\n",
        "References (0 unresolved):\n  backendRef -> Backend/default/upstream-a [ok]\n",
        "Referred to by:\n  AIGatewayRoute/default/quickstart (backendRef) [ok]\n",
        "  Cluster aisb/default/upstream-a (version ",
        "  ClusterLoadAssignment aisb/default/upstream-a (version ",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.yaml");
    std::fs::write(
        &file,
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {name: r}\nspec:\n  rules:\n  - backendRefs: [{name: gone}]\n",
    )
    .unwrap();
    let (code, text, _) = aixds(&["explain", "AIGatewayRoute/default/r", file.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        text.contains(
            "References (1 unresolved):\n  backendRef -> AIServiceBackend/default/gone [missing]"
        ),
        "{text}"
    );
    assert!(text.contains("ResolvedRefs=False BackendNotFound"), "{text}");
}

#[test]
fn rbac_prints_the_committed_rules() {
    let (code, stdout, _) = aixds(&["rbac"]);
    assert_eq!(code, 0);
    let committed =
        std::fs::read_to_string(crate::harness::repo().join("charts/aixds/files/rbac-rules.yaml"))
            .unwrap();
    assert_eq!(stdout, committed);
}

/// A TCP port for xDS and the ext_proc needs client certificates: without them neither `run`
/// nor `serve` starts, unless asked by name to accept anyone.
#[test]
fn tcp_grpc_without_client_certificates_is_refused_unless_insecure_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let certs = crate::tls::certificates(dir.path());
    let path = |f: &str| certs.join(f).to_string_lossy().into_owned();
    let (cert, key) = (path("server.crt"), path("server.key"));
    let local = ["--admin-address", "127.0.0.1:0", "--picker-address", "127.0.0.1:0"];
    for args in [
        vec!["run", "examples/", "--no-envoy"],
        vec!["run", "examples/", "--no-envoy", "--xds-address", "127.0.0.1:0"],
        vec!["run", "examples/", "--xds-address", "127.0.0.1:0"],
        vec!["run", "examples/", "--no-envoy", "--tls-cert", &cert, "--tls-key", &key],
        vec!["serve", "--xds-address", "127.0.0.1:0"],
        vec!["serve", "--xds-address", "127.0.0.1:0", "--tls-cert", &cert, "--tls-key", &key],
    ] {
        let (code, _, stderr) = aixds(&[&args[..], &local].concat());
        assert_eq!(code, 2, "{args:?} must not start: {stderr}");
        assert!(
            stderr.contains("without client authentication")
                && stderr.contains("--insecure-grpc")
                && stderr.contains("--tls-client-ca"),
            "{args:?}: {stderr}"
        );
    }
}

/// With mutual TLS, aixds's endpoint picker requires Envoy's client certificate too, so aixds
/// must know where Envoy reads it (to present it to pickers) or serve no picker.
#[test]
fn mutual_tls_with_a_picker_needs_envoys_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = crate::tls::certificates(dir.path());
    let path = |f: &str| certs.join(f).to_string_lossy().into_owned();
    let (cert, key, ca) = (path("server.crt"), path("server.key"), path("ca.crt"));
    let tls = ["--tls-cert", &cert, "--tls-key", &key, "--tls-client-ca", &ca];
    let local = ["--xds-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0"];
    let (code, _, stderr) =
        aixds(&[&["run", "examples/", "--no-envoy"][..], &tls, &local].concat());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--tls-client-cert") && stderr.contains("--no-picker"), "{stderr}");
}

/// A keyed backend whose Secret is missing or holds no key fails validation, on the policy and
/// on the backend; with the key it passes.
#[test]
fn validate_fails_on_a_keyed_backend_without_its_credential() {
    let dir = tempfile::tempdir().unwrap();
    let objects = "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {name: b}\n\
        spec: {schema: {name: OpenAI}, backendRef: {name: b, group: gateway.envoyproxy.io, kind: Backend}}\n\
        ---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: b}\n\
        spec: {endpoints: [{ip: {address: 127.0.0.1, port: 8080}}]}\n\
        ---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: BackendSecurityPolicy\nmetadata: {name: p}\n\
        spec: {targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: b}], type: APIKey, apiKey: {secretRef: {name: k}}}\n";
    std::fs::write(dir.path().join("objects.yaml"), objects).unwrap();
    let secret = dir.path().join("secret.yaml");
    let path = dir.path().to_str().unwrap();

    let (code, stdout, _) = aixds(&["validate", path]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("ResolvedRefs=False SecretNotFound: BackendSecurityPolicy default/p: Secret default/k not found"),
        "the backend says why it is not served: {stdout}"
    );
    assert!(
        stdout.contains("ResolvedRefs=False SecretNotFound: Secret default/k not found"),
        "{stdout}"
    );

    std::fs::write(
        &secret,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: k}\nstringData: {token: sk-secret}\n",
    )
    .unwrap();
    let (code, stdout, _) = aixds(&["validate", path]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains(r#"InvalidSecret: BackendSecurityPolicy default/p: Secret default/k has no "apiKey" key"#), "{stdout}");
    assert!(!stdout.contains("sk-secret"), "no secret value is printed: {stdout}");

    std::fs::write(
        &secret,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: k}\nstringData: {apiKey: sk-secret}\n",
    )
    .unwrap();
    let (code, stdout, _) = aixds(&["validate", path]);
    assert_eq!(code, 0, "{stdout}");
}

/// A conflicting duplicate and an invalid name each fail validation, naming the files and
/// lines; the other objects are reported as usual.
#[test]
fn validate_fails_on_a_conflict_and_on_an_invalid_name() {
    let dir = tempfile::tempdir().unwrap();
    let secret = |name: &str, key: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData: {{apiKey: {key}}}\n"
        )
    };
    std::fs::write(dir.path().join("a.yaml"), secret("k", "one")).unwrap();
    std::fs::write(dir.path().join("b.yaml"), secret("k", "two")).unwrap();
    let path = dir.path().to_str().unwrap();
    let (code, stdout, _) = aixds(&["validate", path]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("Accepted=True Conflict: defined differently in {path}/a.yaml:1 and {path}/b.yaml:1; using the first".replace("{path}", path).as_str()),
        "{stdout}"
    );

    std::fs::write(
        dir.path().join("b.yaml"),
        format!("{}---\n{}", secret("k", "one"), secret("x_y", "k")),
    )
    .unwrap();
    let (code, stdout, _) = aixds(&["validate", path]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "error: {path}/b.yaml:6: Secret left out: metadata.name \"x_y\" is not valid"
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("Conflict"), "{stdout}");
}

/// `RUST_LOG` sets the log filter when `AIXDS_LOG` does not: a filter that does not parse is
/// reported, naming the variable it came from.
#[test]
fn rust_log_is_read_and_aixds_log_wins() {
    let run = |vars: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_aixds"))
            .args(["validate", "examples/"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("AIXDS_LOG")
            .env_remove("RUST_LOG")
            .envs(vars.iter().copied())
            .output()
            .expect("run aixds");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&[("RUST_LOG", "aixds=loud")]).contains("RUST_LOG"), "RUST_LOG is read");
    let both = run(&[("AIXDS_LOG", "aixds=loud"), ("RUST_LOG", "aixds=loud")]);
    assert!(both.contains("AIXDS_LOG") && !both.contains("RUST_LOG"), "{both}");
    assert_eq!(run(&[("AIXDS_LOG", "warn"), ("RUST_LOG", "aixds=loud")]), "", "AIXDS_LOG wins");
}

#[test]
fn a_client_secret_never_goes_to_a_plain_http_authority() {
    let (code, _, stderr) =
        aixds(&["run", "--no-envoy", "--azure-authority-host", "http://login.example.com", "x"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("plain http to a host that is not loopback"), "{stderr}");
}

/// `aixds validate` on HTTPRoutes: a route to a pool that does not exist, a pool whose picker
/// Service does not exist, a Service in another namespace without a ReferenceGrant, each with
/// Gateway API's reason; with the objects supplied and the grant written, the files pass.
#[test]
fn validate_reports_an_http_route_s_unresolved_references_with_gateway_api_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\n\
                 spec: {gatewayClassName: aixds, listeners: [{name: http, protocol: HTTP, port: 8080}]}\n\
                 ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\n\
                 spec:\n  parentRefs: [{name: gw}]\n  rules:\n\
                 \x20 - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: llama}]\n\
                 \x20 - matches: [{path: {value: /web}}]\n    backendRefs: [{name: web, namespace: web, port: 80}]\n\
                 ---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: web}\n\
                 spec: {clusterIP: 10.0.0.9, ports: [{port: 80}]}\n";
    std::fs::write(dir.path().join("route.yaml"), route).unwrap();
    let path = dir.path().to_str().unwrap();
    let (code, stdout, _) = aixds(&["validate", path]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout
            .contains("ResolvedRefs=False BackendNotFound: InferencePool default/llama not found"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Service web/web is in another namespace and no ReferenceGrant"),
        "{stdout}"
    );

    let pool = "apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\nmetadata: {name: llama}\n\
                spec: {targetPorts: [{number: 8000}], selector: {matchLabels: {app: llama}},\n\
                \x20      endpointPickerRef: {name: llama-epp, port: {number: 9002}}}\n\
                ---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
                metadata: {name: routes, namespace: web}\n\
                spec: {from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}], \
                to: [{group: '', kind: Service}]}\n";
    std::fs::write(dir.path().join("pool.yaml"), pool).unwrap();
    let (code, stdout, _) = aixds(&["validate", path]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("ResolvedRefs=False InvalidExtensionRef: endpoint picker Service default/llama-epp not found"),
        "{stdout}"
    );
    assert!(!stdout.contains("ReferenceGrant there allows"), "the grant permits it: {stdout}");

    let epp = "apiVersion: v1\nkind: Service\nmetadata: {name: llama-epp}\n\
               spec: {clusterIP: 10.0.0.10, ports: [{port: 9002}]}\n";
    std::fs::write(dir.path().join("epp.yaml"), epp).unwrap();
    let (code, stdout, _) = aixds(&["validate", path]);
    assert_eq!(code, 0, "{stdout}");
}
