//! Gateway API semantics: which Gateways are aixds's, listeners and their conditions, hostnames
//! as Envoy virtual hosts, and a real Envoy routing by host name.

use std::collections::BTreeMap;
use std::sync::Mutex;

use aixds::api::{Kind, ObjectKey};
use aixds::compile::{CompileOptions, Compiler};
use aixds::graph::listeners::listeners;
use aixds::graph::{ConditionType, Graph, Reason};
use aixds::xds::TypeUrl;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

use prost::Message;

use crate::builders::parse;
use crate::compile::{decoded, scope_config};
use crate::envoy::{edit, start_gateway};
use crate::harness::*;

const CONTROLLER: &str = "aixds.io/gateway-controller";

/// A self-signed certificate for `host` and its private key, in PEM, made by openssl once per
/// host and test run.
pub(crate) fn certificate(host: &str) -> (String, String) {
    static MADE: Mutex<BTreeMap<String, (String, String)>> = Mutex::new(BTreeMap::new());
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    made.entry(host.to_string())
        .or_insert_with(|| {
            let dir = tempfile::tempdir().unwrap();
            let out = std::process::Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
                .args(["-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "1"])
                .args([
                    "-subj",
                    &format!("/CN={host}"),
                    "-addext",
                    &format!("subjectAltName=DNS:{host}"),
                ])
                .current_dir(dir.path())
                .output()
                .expect("run openssl (hack/install.sh installs it)");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
            (read("cert.pem"), read("key.pem"))
        })
        .clone()
}

fn class(name: &str, controller: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {name}}}\n\
         spec: {{controllerName: {controller}}}\n"
    )
}

/// A Gateway of class `class` with `listeners`, each `name:PROTOCOL:port[:hostname]`.
fn gateway(name: &str, class: &str, listeners: &[&str]) -> String {
    let listeners: Vec<String> = listeners
        .iter()
        .map(|l| {
            let parts: Vec<&str> = l.split(':').collect();
            let host = parts.get(3).map(|h| format!(", hostname: \"{h}\"")).unwrap_or_default();
            format!("{{name: {}, protocol: {}, port: {}{host}}}", parts[0], parts[1], parts[2])
        })
        .collect();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}}}\n\
         spec: {{gatewayClassName: {class}, listeners: [{}]}}\n",
        listeners.join(", ")
    )
}

/// A route for model `m` to backend `backend`, attached by `parent` (`gw` or `gw/section`) and
/// serving `hostnames`.
fn route(name: &str, parent: &str, hostnames: &[&str], backend: &str) -> String {
    let parent = match parent.split_once('/') {
        Some((gw, section)) => format!("{{name: {gw}, sectionName: {section}}}"),
        None => format!("{{name: {parent}}}"),
    };
    let hostnames: Vec<String> = hostnames.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {{name: {name}}}\n\
         spec:\n  parentRefs: [{parent}]\n  hostnames: [{}]\n  rules:\n\
         \x20 - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: m}}]}}]\n\
         \x20   backendRefs: [{{name: {backend}}}]\n",
        hostnames.join(", ")
    )
}

fn backend(name: &str, ip: &str, port: u16) -> String {
    format!(
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {{name: {name}}}\n\
         spec: {{schema: {{name: OpenAI}}, backendRef: {{name: {name}, group: gateway.envoyproxy.io, kind: Backend}}}}\n\
         ---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {{name: {name}}}\n\
         spec: {{endpoints: [{{ip: {{address: \"{ip}\", port: {port}}}}}]}}\n"
    )
}

/// An API key policy on backend `target`, its key in Secret `secret`.
fn policy(name: &str, target: &str, secret: &str) -> String {
    format!(
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: BackendSecurityPolicy\nmetadata: {{name: {name}}}\n\
         spec: {{targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {target}}}], \
         type: APIKey, apiKey: {{secretRef: {{name: {secret}}}}}}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: {secret}}}\nstringData: {{apiKey: k}}\n"
    )
}

fn graph_of(controller: Option<&str>, docs: &[String]) -> Graph {
    let mut graph = Graph::with_controller(controller.map(str::to_string));
    for doc in docs.iter().flat_map(|d| d.split("---\n")) {
        graph.apply(parse(doc));
    }
    graph
}

fn key(kind: Kind, name: &str) -> ObjectKey {
    ObjectKey::new(kind, "default", name)
}

/// Per virtual host of `config`: its domains and the routes' names up to the 404s.
fn virtual_hosts(config: &RouteConfiguration) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    config
        .virtual_hosts
        .iter()
        .map(|v| {
            let routes =
                v.routes.iter().map(|r| r.name.clone()).filter(|n| !n.starts_with("not-found"));
            (v.name.clone(), (v.domains.clone(), routes.collect()))
        })
        .collect()
}

fn condition(graph: &Graph, key: &ObjectKey, type_: ConditionType) -> (bool, Reason, String) {
    let node = graph.node(key).unwrap_or_else(|| panic!("{key} in the graph"));
    let c = node.conditions().iter().find(|c| c.type_ == type_);
    let c = c.unwrap_or_else(|| panic!("{key} has a {type_:?} condition: {:?}", node.conditions()));
    (c.status, c.reason, c.message.clone())
}

#[test]
fn route_hostnames_become_virtual_hosts_most_specific_first() {
    let graph = graph_of(
        None,
        &[
            gateway("gw", "any", &["http:HTTP:8080"]),
            route("ra", "gw", &["a.example.com"], "a"),
            route("rw", "gw", &["*.example.com"], "a"),
            route("rb", "gw", &["b.example.com"], "b"),
            route("rany", "gw", &[], "b"),
            backend("a", "10.0.0.1", 80),
            backend("b", "10.0.0.2", 80),
        ],
    );
    let out = Compiler::new(CompileOptions::default()).full(&graph);
    // Every route names model m alone, so in m's scope a host's first route takes every request
    // and is the last one there: rw and rany, behind ra on a.example.com, could never match.
    let config = &scope_config(&out, 8080, Some("m"));
    assert!(config.ignore_port_in_host_matching, "Host headers carry the port");
    let hosts = virtual_hosts(config);
    let names = |prefixes: &[&str]| -> Vec<String> {
        prefixes.iter().map(|p| format!("default/{p}/rule/0/match/0")).collect()
    };
    assert_eq!(hosts["a.example.com"], (vec!["a.example.com".into()], names(&["ra"])));
    assert_eq!(hosts["b.example.com"], (vec!["b.example.com".into()], names(&["rb"])));
    assert_eq!(hosts["*.example.com"], (vec!["*.example.com".into()], names(&["rw"])));
    assert_eq!(hosts["*"], (vec!["*".into()], names(&["rany"])));
    assert_eq!(hosts.len(), 4);
}

#[test]
fn a_listener_hostname_narrows_routes_and_refuses_those_it_does_not_cover() {
    let graph = graph_of(
        None,
        &[
            gateway("gw", "any", &["wild:HTTP:8080:*.example.com"]),
            route("inside", "gw", &["a.example.com", "other.org"], "a"),
            route("open", "gw", &[], "a"),
            route("outside", "gw", &["other.org"], "a"),
            backend("a", "10.0.0.1", 80),
        ],
    );
    let (ok, reason, message) =
        condition(&graph, &key(Kind::AIGatewayRoute, "outside"), ConditionType::Accepted);
    assert_eq!((ok, reason), (false, Reason::NoMatchingListenerHostname), "{message}");
    assert!(message.contains("other.org"), "{message}");
    assert!(condition(&graph, &key(Kind::AIGatewayRoute, "inside"), ConditionType::Accepted).0);

    let out = Compiler::new(CompileOptions::default()).full(&graph);
    let hosts = virtual_hosts(&scope_config(&out, 8080, Some("m")));
    let inside = "default/inside/rule/0/match/0".to_string();
    let open = "default/open/rule/0/match/0".to_string();
    // inside takes every request for m on its host: open, after it, is left out there.
    assert_eq!(hosts["a.example.com"].1, vec![inside]);
    assert_eq!(
        hosts["*.example.com"].1,
        vec![open],
        "a route with no hostnames takes the listener's"
    );
    assert!(hosts["*"].1.is_empty(), "nothing outside the listener's hostname: {hosts:?}");
    let all: Vec<&String> = hosts.values().flat_map(|h| &h.1).collect();
    assert!(!all.iter().any(|n| n.contains("outside")), "{all:?}");
}

#[test]
fn section_name_picks_a_listener_and_a_wrong_one_is_reported() {
    let graph = graph_of(
        None,
        &[
            gateway("gw", "any", &["one:HTTP:8081", "two:HTTP:8082"]),
            route("r2", "gw/two", &[], "a"),
            route("nowhere", "gw/three", &[], "a"),
            backend("a", "10.0.0.1", 80),
        ],
    );
    let out = Compiler::new(CompileOptions::default()).full(&graph);
    assert!(virtual_hosts(&scope_config(&out, 8081, Some("m")))["*"].1.is_empty());
    assert_eq!(
        virtual_hosts(&scope_config(&out, 8082, Some("m")))["*"].1,
        vec!["default/r2/rule/0/match/0"]
    );
    let (ok, reason, message) =
        condition(&graph, &key(Kind::AIGatewayRoute, "nowhere"), ConditionType::Accepted);
    assert_eq!((ok, reason), (false, Reason::NoMatchingParent));
    assert!(message.contains("no listener named \"three\""), "{message}");
}

#[test]
fn listeners_that_cannot_be_served_are_left_out_and_the_rest_serves() {
    let graph = graph_of(
        None,
        &[
            gateway(
                "gw",
                "any",
                &[
                    "http:HTTP:8080",
                    "tcp:TCP:8081",
                    "tls-no-cert:HTTPS:8443",
                    "same-host:HTTP:8080",
                    "other-protocol:HTTPS:8080:x.example.com",
                    "bad-host:HTTP:8082:Not_A_Host",
                ],
            ),
            route("r", "gw", &[], "a"),
            backend("a", "10.0.0.1", 80),
        ],
    );
    let gw = key(Kind::Gateway, "gw");
    let states = listeners(&graph, &gw);
    // Per listener: served, and the conditions that say why not.
    type Judged = (bool, Vec<(ConditionType, bool, Reason)>);
    let judged: BTreeMap<&str, Judged> = states
        .iter()
        .map(|l| {
            let bad = l.conditions.iter().filter(|c| !c.is_good());
            (
                l.spec.name.as_str(),
                (l.usable(), bad.map(|c| (c.type_, c.status, c.reason)).collect()),
            )
        })
        .collect();
    use ConditionType::*;
    assert_eq!(judged["http"], (true, vec![]));
    assert_eq!(judged["tcp"], (false, vec![(Accepted, false, Reason::UnsupportedProtocol)]));
    assert_eq!(
        judged["tls-no-cert"],
        (false, vec![(ResolvedRefs, false, Reason::InvalidCertificateRef)])
    );
    assert_eq!(judged["same-host"], (false, vec![(Conflicted, true, Reason::HostnameConflict)]));
    assert_eq!(judged["other-protocol"].1[0].2, Reason::InvalidCertificateRef);
    assert!(judged["other-protocol"].1.contains(&(Conflicted, true, Reason::ProtocolConflict)));
    assert_eq!(judged["bad-host"], (false, vec![(Accepted, false, Reason::UnsupportedValue)]));

    let (ok, reason, message) = condition(&graph, &gw, Accepted);
    assert_eq!((ok, reason), (true, Reason::ListenersNotValid), "some listeners still serve");
    assert!(message.contains("\"tcp\""), "{message}");
    assert!(!condition(&graph, &gw, ResolvedRefs).0, "the missing certificate is unresolved");

    let out = Compiler::new(CompileOptions::default()).full(&graph);
    let served = decoded::<Listener>(&out, TypeUrl::Listener);
    assert_eq!(served.keys().collect::<Vec<_>>(), ["listener-8080"]);
    assert_eq!(served["listener-8080"].filter_chains.len(), 1, "plain HTTP, one chain");
}

#[test]
fn gateways_sharing_a_port_agree_or_the_later_listener_is_reported_conflicted() {
    let (crt, key) = certificate("x.example.com");
    let tls = |name: &str| crate::sds::tls_secret_yaml("default", name, &crt, &key);
    let https = |gw: &str, host: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {gw}}}\n\
             spec: {{gatewayClassName: any, listeners: [{{name: web, protocol: HTTPS, port: 8443, \
             hostname: \"{host}\", tls: {{certificateRefs: [{{name: cert}}]}}}}]}}\n"
        )
    };
    let graph = graph_of(
        None,
        &[
            gateway("a-plain", "any", &["web:HTTP:8080"]),
            https("b-tls-on-plain", "x.example.com").replace("8443", "8080"),
            https("c-tls", "x.example.com"),
            https("d-same-host", "x.example.com"),
            https("e-other-host", "y.example.com"),
            tls("cert"),
        ],
    );
    let conflicts = aixds::graph::listeners::port_conflicts(&graph);
    let reason = |gw: &str| conflicts.get(&(key_of(gw), "web".to_string())).map(|c| c.0);
    assert_eq!(reason("a-plain"), None);
    assert_eq!(reason("b-tls-on-plain"), Some(Reason::ProtocolConflict));
    assert_eq!(reason("c-tls"), None);
    assert_eq!(reason("d-same-host"), Some(Reason::HostnameConflict));
    assert_eq!(reason("e-other-host"), None);

    // What Envoy gets agrees: one plain chain on 8080, two SNI chains on 8443.
    let out = Compiler::new(CompileOptions::default()).full(&graph);
    let served = decoded::<Listener>(&out, TypeUrl::Listener);
    assert_eq!(served["listener-8080"].filter_chains.len(), 1);
    assert!(served["listener-8080"].filter_chains[0].transport_socket.is_none());
    let names: Vec<Vec<String>> = served["listener-8443"]
        .filter_chains
        .iter()
        .map(|c| c.filter_chain_match.as_ref().unwrap().server_names.clone())
        .collect();
    assert_eq!(names, [vec!["x.example.com".to_string()], vec!["y.example.com".to_string()]]);

    // And so does the status: the listener kept off its port is Conflicted, not Programmed.
    let report =
        aixds::status::gateway_report(&graph, &key_of("d-same-host"), &BTreeMap::new(), &conflicts);
    let conditions: Vec<(ConditionType, bool, Reason)> =
        report.listeners[0].1.iter().map(|c| (c.type_, c.status, c.reason)).collect();
    assert!(
        conditions.contains(&(ConditionType::Conflicted, true, Reason::HostnameConflict)),
        "{conditions:?}"
    );
    assert!(
        conditions.contains(&(ConditionType::Programmed, false, Reason::Invalid)),
        "{conditions:?}"
    );
    assert_eq!((report.programmed.status, report.programmed.reason), (false, Reason::Invalid));
}

/// A certificate Secret deleted while its listener serves: that listener leaves, with why; its
/// neighbour on the same port keeps its chain, its certificate and the routes.
#[test]
fn deleting_one_listeners_certificate_leaves_its_neighbour_serving() {
    let (crt, tls_key) = certificate("x.example.com");
    let https = |name: &str, host: &str| {
        format!(
            "{{name: {name}, protocol: HTTPS, port: 8443, hostname: \"{host}\", \
             tls: {{certificateRefs: [{{name: cert-{name}}}]}}}}"
        )
    };
    let docs = [
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\n\
             spec: {{gatewayClassName: any, listeners: [{}, {}]}}\n",
            https("a", "a.example.com"),
            https("b", "b.example.com")
        ),
        route("r", "gw", &[], "up"),
        backend("up", "10.0.0.1", 80),
        crate::sds::tls_secret_yaml("default", "cert-a", &crt, &tls_key),
        crate::sds::tls_secret_yaml("default", "cert-b", &crt, &tls_key),
    ];
    let objects: Vec<_> = docs.iter().flat_map(|d| d.split("---\n")).map(parse).collect();
    let mut live = crate::compile::Harness::new(objects);
    let chains = |live: &crate::compile::Harness| -> Vec<Vec<String>> {
        let snapshot = live.store.load();
        let listener = snapshot.get(TypeUrl::Listener, "listener-8443").unwrap();
        Listener::decode(listener.body.value.as_slice())
            .unwrap()
            .filter_chains
            .iter()
            .map(|c| c.filter_chain_match.as_ref().unwrap().server_names.clone())
            .collect()
    };
    assert_eq!(chains(&live).len(), 2);

    live.delete(&ObjectKey::new(Kind::Secret, "default", "cert-a"));
    assert_eq!(chains(&live), [vec!["b.example.com".to_string()]]);
    let secrets: Vec<String> =
        live.store.load().resources(TypeUrl::Secret).keys().cloned().collect();
    assert_eq!(secrets, ["secret/default/cert-b"]);
    let hosts = virtual_hosts(&scope_config(&live.updates(), 8443, Some("m")));
    assert_eq!(hosts["b.example.com"].1, ["default/r/rule/0/match/0"], "the route stays on b");
    assert!(!hosts.contains_key("a.example.com"), "{hosts:?}");
    let a = listeners(&live.graph, &key_of("gw"));
    assert_eq!(a[0].conditions[1].reason, Reason::InvalidCertificateRef, "{:?}", a[0].conditions);
    live.assert_matches_full();
}

#[test]
fn a_route_past_gateway_apis_hostname_bound_is_refused() {
    let many: Vec<String> = (0..17).map(|i| format!("h{i}.example.com")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let graph =
        graph_of(None, &[gateway("gw", "any", &["http:HTTP:8080"]), route("r", "gw", &many, "a")]);
    let (ok, reason, message) =
        condition(&graph, &key(Kind::AIGatewayRoute, "r"), ConditionType::Accepted);
    assert_eq!((ok, reason), (false, Reason::Invalid));
    assert!(message.contains("17 hostnames"), "{message}");
}

fn key_of(gateway: &str) -> ObjectKey {
    key(Kind::Gateway, gateway)
}

#[test]
fn only_gateways_of_its_own_classes_are_programmed_and_reported_on() {
    let docs = [
        class("mine", CONTROLLER),
        class("theirs", "example.com/other-controller"),
        gateway("gw-mine", "mine", &["http:HTTP:8080"]),
        gateway("gw-theirs", "theirs", &["http:HTTP:8081"]),
        gateway("gw-classless", "missing", &["http:HTTP:8082"]),
        route("r-mine", "gw-mine", &[], "shared"),
        route("r-theirs", "gw-theirs", &[], "b-theirs"),
        route("r-theirs-too", "gw-theirs", &[], "shared"),
        backend("shared", "10.0.0.1", 80),
        backend("b-theirs", "10.0.0.2", 80),
        policy("key-theirs", "b-theirs", "secret-theirs"),
        policy("key-shared", "shared", "secret-shared"),
    ];
    let mut graph = graph_of(Some(CONTROLLER), &docs);
    let mut compiler = Compiler::new(CompileOptions::default());
    let out = compiler.full(&graph);
    let served = decoded::<Listener>(&out, TypeUrl::Listener);
    assert_eq!(served.keys().collect::<Vec<_>>(), ["listener-8080"], "only its own Gateway");

    let class_key = |n: &str| ObjectKey::new(Kind::GatewayClass, "", n);
    for (k, foreign) in [
        (class_key("mine"), false),
        (class_key("theirs"), true),
        (key(Kind::Gateway, "gw-mine"), false),
        (key(Kind::Gateway, "gw-theirs"), true),
        (key(Kind::Gateway, "gw-classless"), true),
        (key(Kind::AIGatewayRoute, "r-mine"), false),
        (key(Kind::AIGatewayRoute, "r-theirs"), true),
        (key(Kind::AIServiceBackend, "b-theirs"), true),
        (key(Kind::Backend, "b-theirs"), true),
        (key(Kind::AIServiceBackend, "shared"), false),
        (key(Kind::BackendSecurityPolicy, "key-theirs"), true),
        (key(Kind::Secret, "secret-theirs"), true),
        (key(Kind::BackendSecurityPolicy, "key-shared"), false),
        (key(Kind::Secret, "secret-shared"), false),
    ] {
        assert_eq!(graph.foreign_objects().contains(&k), foreign, "{k}");
    }
    let conditions = |k: &ObjectKey| graph.node(k).unwrap().conditions().to_vec();
    let mine: Vec<(ConditionType, bool)> =
        conditions(&class_key("mine")).iter().map(|c| (c.type_, c.status)).collect();
    assert_eq!(mine, [(ConditionType::Accepted, true), (ConditionType::SupportedVersion, true)]);
    assert!(conditions(&class_key("theirs")).is_empty(), "nothing said of another's class");
    assert!(conditions(&key(Kind::Gateway, "gw-theirs")).is_empty());
    assert!(conditions(&key(Kind::AIGatewayRoute, "r-theirs")).is_empty());

    // The other class is handed to aixds: its Gateway is programmed, incrementally.
    let affected = graph.apply(parse(&class("theirs", CONTROLLER)));
    let out = compiler.update(&graph, &affected.keys);
    let served = decoded::<Listener>(&out, TypeUrl::Listener);
    assert!(served.contains_key("listener-8081"), "{:?}", served.keys());
    let routes = &virtual_hosts(&scope_config(&out, 8081, Some("m")))["*"].1;
    assert_eq!(routes, &["default/r-theirs/rule/0/match/0"], "the first of its routes for m");
    for route in ["r-theirs", "r-theirs-too"] {
        assert!(!graph.foreign_objects().contains(&key(Kind::AIGatewayRoute, route)), "{route}");
    }
    assert_eq!(
        compiler.full(&graph).len(),
        Compiler::new(CompileOptions::default()).full(&graph).len()
    );
}

#[test]
fn without_a_controller_name_every_gateway_is_programmed() {
    let graph = graph_of(
        None,
        &[
            class("eg", "gateway.envoyproxy.io/gatewayclass-controller"),
            gateway("gw", "eg", &["http:HTTP:8080"]),
            gateway("gw2", "no-such-class", &["http:HTTP:8081"]),
        ],
    );
    let out = Compiler::new(CompileOptions::default()).full(&graph);
    let served = decoded::<Listener>(&out, TypeUrl::Listener);
    assert_eq!(served.keys().collect::<Vec<_>>(), ["listener-8080", "listener-8081"]);
    assert!(graph.foreign_objects().is_empty(), "without a controller name nothing is foreign");
}

#[test]
fn validate_and_explain_show_each_listener_with_its_conditions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.yaml");
    let docs =
        [gateway("gw", "any", &["http:HTTP:8080", "raw:TCP:9000"]), route("r", "gw", &[], "a")];
    write_atomic(&file, docs.join("---\n") + "---\n" + &backend("a", "10.0.0.1", 80));
    let path = file.to_str().unwrap();
    let (code, out, _) = crate::cli::aixds(&["validate", path]);
    assert_eq!(code, 1, "a listener left out is a problem, though the Gateway serves: {out}");
    assert!(
        out.contains("  listener \"raw\":\n    Accepted=False UnsupportedProtocol: protocol TCP"),
        "{out}"
    );
    assert!(out.contains("  listener \"http\":\n    Accepted=True\n"), "{out}");
    let (code, json, _) = crate::cli::aixds(&["validate", "-o", "json", path]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let gw = json["objects"].as_array().unwrap().iter().find(|o| o["kind"] == "Gateway").unwrap();
    assert_eq!(gw["listeners"][1]["conditions"][0]["reason"], "UnsupportedProtocol", "{gw}");
    let (code, text, _) = crate::cli::aixds(&["explain", "Gateway/default/gw", path]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("Listeners:\n  http (HTTP *:8080)\n    Accepted=True"), "{text}");
    assert!(text.contains("  raw (TCP *:9000)\n    Accepted=False UnsupportedProtocol"), "{text}");
}

/// A real Envoy: two teams share one Gateway by host name, a wildcard listener takes the rest of
/// its domain, and a route outside every listener's hostname serves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_routes_one_model_by_host_name() {
    let (a, b, c) =
        (Upstream::start("A").await, Upstream::start("B").await, Upstream::start("C").await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    let port = free_port();
    let docs = |outside_backend: &str| {
        [
            gateway(
                "gw",
                "any",
                &[
                    &format!("wild:HTTP:{port}:*.example.com"),
                    &format!("api:HTTP:{port}:api.team-c.org"),
                ],
            ),
            route("team-a", "gw", &["a.example.com"], "a"),
            route("rest", "gw/wild", &[], "b"),
            route("team-c", "gw/api", &[], "c"),
            route("outside", "gw/wild", &["elsewhere.net"], outside_backend),
            backend("a", &a.addr.ip().to_string(), a.addr.port()),
            backend("b", &b.addr.ip().to_string(), b.addr.port()),
            backend("c", &c.addr.ip().to_string(), c.addr.port()),
        ]
        .join("---\n")
    };
    write_atomic(&file, docs("a"));
    let mut gw = start_gateway(dir.path(), port, false, "hostnames").await;
    let served = |host: &str| served_at(port, host.to_string());
    eventually(30, "a.example.com served by A", || async {
        (served("a.example.com").await == Ok("A".into())).then_some(())
    })
    .await;
    assert_eq!(served(&format!("a.example.com:{port}")).await, Ok("A".into()));
    assert_eq!(served("x.example.com").await, Ok("B".into()));
    assert_eq!(served("deep.x.example.com").await, Ok("B".into()));
    assert_eq!(served("api.team-c.org").await, Ok("C".into()));
    for host in ["example.com", "elsewhere.net", "localhost"] {
        let (status, body) = served(host).await.unwrap_err();
        assert_eq!(status, 404, "{host}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "model_not_found", "{host}: OpenAI's error shape");
    }

    // Team A moves to another host name: only its virtual host changes.
    edit(&mut gw, &file, &docs("b").replace("a.example.com", "new-a.example.com")).await;
    eventually(10, "new-a.example.com served by A", || async {
        (served("new-a.example.com").await == Ok("A".into())).then_some(())
    })
    .await;
    assert_eq!(served("a.example.com").await, Ok("B".into()), "now the wildcard's");
    assert_eq!(rejected_updates(gw.admin).await, 0, "Envoy rejected no config");

    // The debug graph shows the Gateway programmed, with its listeners.
    let admin = gw.running.admin_addr.unwrap().port();
    let graph = request(admin, "GET", "/debug/graph", &[], "").await.unwrap().json();
    let node = graph["nodes"].as_array().unwrap().iter().find(|n| n["kind"] == "Gateway").unwrap();
    let programmed =
        node["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Programmed");
    assert_eq!(programmed.map(|c| c["status"].clone()), Some("True".into()), "{node}");
    assert_eq!(node["listeners"][0]["hostname"], "*.example.com", "{node}");
    gw.running.shutdown().await;
}

/// A Gateway with nothing routed yet compiles to no Cluster at all: the empty answer to Envoy's
/// Cluster subscription lets it ask for Listeners at once, rather than after its initial fetch
/// timeout (15 s), and the listener answers with the 404 in the client's format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_routes_listens_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_atomic(dir.path().join("gw.yaml"), gateway("gw", "any", &[&format!("http:HTTP:{port}")]));
    let gw = start_gateway(dir.path(), port, false, "no-clusters").await;
    let (status, body) = eventually(10, "the listener answers", || async {
        served_at(port, "localhost".into()).await.err().filter(|(status, _)| *status != 0)
    })
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("model_not_found"), "{body}");
    gw.running.shutdown().await;
}

/// Which upstream served model `m` for Host `host`, or the status and body of the refusal.
async fn served_at(port: u16, host: String) -> Result<String, (u16, String)> {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let headers = [("x-ai-eg-model", "m")];
    let r = request_to(port, &host, "POST", "/v1/chat/completions", &headers, body).await;
    let r = r.map_err(|e| (0, e.to_string()))?;
    match r.status {
        200 => Ok(r.headers.get("x-upstream-id").cloned().unwrap_or_default()),
        status => Err((status, r.body)),
    }
}

/// A TLS connection to 127.0.0.1:`port` for `sni`, trusting only `ca`.
async fn tls_connect(
    port: u16,
    sni: &str,
    ca: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap()).unwrap();
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    connector.connect(ServerName::try_from(sni.to_string()).unwrap(), tcp).await
}

/// The DER of the leaf certificate the server presented on `stream`.
fn presented(stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
}

/// One chat request for model `m` on an open connection (kept alive); the upstream that served
/// it.
async fn chat_on<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
         x-ai-eg-model: m\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("a response")
            .unwrap();
        assert!(n > 0, "the connection closed: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).to_string();
        let Some((head, rest)) = text.split_once("\r\n\r\n") else { continue };
        let lower = head.to_ascii_lowercase();
        // The whole response is read, so that the next one on the connection starts clean:
        // by its length, or to the last chunk.
        let complete = match lower.lines().find_map(|l| l.strip_prefix("content-length:")) {
            Some(length) => rest.len() >= length.trim().parse::<usize>().unwrap(),
            None if lower.contains("transfer-encoding: chunked") => rest.ends_with("0\r\n\r\n"),
            None => true,
        };
        if !complete {
            continue;
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let id = head.lines().find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("x-upstream-id:").map(|v| v.trim().to_string())
        });
        return id.unwrap_or_default();
    }
}

/// A real Envoy terminating TLS for two hostnames on one port, each with its own certificate
/// chosen by SNI, for a client that trusts only the test CA; then one certificate rotated in
/// its Secret: new connections get it within seconds, a connection opened before keeps
/// working, and Envoy never drains or changes the listener. No private key is in a Listener,
/// as aixds serves it or as Envoy holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listeners_pick_certificates_by_sni_and_rotate_without_a_drain() {
    let upstream = Upstream::start("A").await;
    let ca = crate::tls::TestCa::new();
    let (a_crt, a_key) = ca.leaf("a", "subjectAltName=DNS:a.example.com");
    let (b_crt, b_key) = ca.leaf("b", "subjectAltName=DNS:b.example.com");
    let (a2_crt, a2_key) = ca.leaf("a-rotated", "subjectAltName=DNS:a.example.com");
    let port = free_port();
    let secret =
        |name: &str, crt: &str, key: &str| crate::sds::tls_secret_yaml("default", name, crt, key);
    let https = |name: &str, host: &str| {
        format!(
            "{{name: {name}, protocol: HTTPS, port: {port}, hostname: {host}, \
             tls: {{mode: Terminate, certificateRefs: [{{name: cert-{name}}}]}}}}"
        )
    };
    let manifests = |a: (&str, &str)| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\n\
             spec: {{gatewayClassName: any, listeners: [{}, {}]}}\n---\n{}---\n{}---\n{}---\n{}",
            https("a", "a.example.com"),
            https("b", "b.example.com"),
            route("r", "gw", &[], "up"),
            backend("up", &upstream.addr.ip().to_string(), upstream.addr.port()),
            secret("cert-a", a.0, a.1),
            secret("cert-b", &b_crt, &b_key),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    write_atomic(&file, manifests((&a_crt, &a_key)));
    let mut gw = start_gateway(dir.path(), port, false, "https-sni").await;
    let ca_pem = ca.ca();

    let mut a = eventually(30, "a.example.com answers over TLS", || async {
        tls_connect(port, "a.example.com", &ca_pem).await.ok()
    })
    .await;
    assert_eq!(presented(&a), der(&a_crt), "a.example.com's certificate");
    assert_eq!(chat_on(&mut a, "a.example.com").await, "a");
    let mut b = tls_connect(port, "b.example.com", &ca_pem).await.unwrap();
    assert_eq!(presented(&b), der(&b_crt), "b.example.com's certificate");
    assert_eq!(chat_on(&mut b, "b.example.com").await, "a");
    assert!(
        tls_connect(port, "c.example.com", &ca_pem).await.is_err(),
        "no listener serves c.example.com"
    );

    // No private key in the Listener aixds serves, nor in Envoy's config dump.
    // The key's full base64 lines (64 characters): a short last line could occur anywhere.
    let key_lines = |key: &str| -> Vec<String> {
        key.lines().filter(|l| l.len() == 64).map(str::to_string).collect()
    };
    assert!(key_lines(&a_key).len() >= 2, "{a_key}");
    let snapshot = gw.running.store.load();
    let listener = snapshot.get(TypeUrl::Listener, &format!("listener-{port}")).unwrap();
    let listener_bytes = String::from_utf8_lossy(&listener.body.value).to_string();
    let dump = admin_get(gw.admin, "/config_dump?include_eds").await;
    for line in key_lines(&a_key).iter().chain(&key_lines(&b_key)) {
        assert!(!listener_bytes.contains(line.as_str()), "a key line in the Listener");
        assert!(!dump.contains(line.as_str()), "a key line in Envoy's config dump");
    }
    assert!(dump.contains("tls_certificate_sds_secret_configs"), "the listener names its secrets");
    let envoy_admin = gw.admin;
    let modified = || async move {
        admin_get(envoy_admin, "/stats?filter=listener_manager.listener_(modified|removed)$").await
    };
    let before = modified().await;
    assert!(before.contains("listener_manager.listener_modified: 0"), "{before}");

    // Rotation: a's Secret gets a new certificate and key.
    edit(&mut gw, &file, &manifests((&a2_crt, &a2_key))).await;
    let fresh = eventually(10, "a new connection gets the rotated certificate", || async {
        let s = tls_connect(port, "a.example.com", &ca_pem).await.ok()?;
        (presented(&s) == der(&a2_crt)).then_some(s)
    })
    .await;
    let mut fresh = fresh;
    assert_eq!(chat_on(&mut fresh, "a.example.com").await, "a");
    assert_eq!(chat_on(&mut a, "a.example.com").await, "a", "the old connection still works");
    assert_eq!(presented(&a), der(&a_crt), "on the certificate it was opened with");
    assert_eq!(modified().await, before, "the listener was neither modified nor drained");
    for line in key_lines(&a2_key) {
        assert!(!admin_get(gw.admin, "/config_dump").await.contains(line.as_str()));
    }
    assert_eq!(rejected_updates(gw.admin).await, 0, "Envoy rejected no config");
    gw.running.shutdown().await;
}
