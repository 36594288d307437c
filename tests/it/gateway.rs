//! Gateway API semantics: which Gateways are aixds's, listeners and their conditions, hostnames
//! as Envoy virtual hosts, and a real Envoy routing by host name.

use std::collections::BTreeMap;
use std::sync::Mutex;

use aixds::api::{Kind, ObjectKey};
use aixds::compile::{CompileOptions, Compiler};
use aixds::graph::listeners::listeners;
use aixds::graph::{ConditionType, Graph, Reason};
use aixds::xds::{TypeUrl, Update};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use prost::Message;

use crate::builders::parse;
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

fn decoded<M: Message + Default>(updates: &[Update], type_url: TypeUrl) -> BTreeMap<String, M> {
    updates
        .iter()
        .filter(|u| u.type_url == type_url)
        .filter_map(|u| u.resource.as_ref())
        .map(|r| (r.name.clone(), M::decode(r.body.value.as_slice()).unwrap()))
        .collect()
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
    let config = &decoded::<RouteConfiguration>(&out, TypeUrl::RouteConfiguration)["route-8080"];
    assert!(config.ignore_port_in_host_matching, "Host headers carry the port");
    let hosts = virtual_hosts(config);
    let names = |prefixes: &[&str]| -> Vec<String> {
        prefixes.iter().map(|p| format!("default/{p}/rule/0/match/0")).collect()
    };
    assert_eq!(
        hosts["a.example.com"],
        (vec!["a.example.com".into()], names(&["ra", "rw", "rany"]))
    );
    assert_eq!(
        hosts["b.example.com"],
        (vec!["b.example.com".into()], names(&["rb", "rw", "rany"]))
    );
    assert_eq!(hosts["*.example.com"], (vec!["*.example.com".into()], names(&["rw", "rany"])));
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
    let hosts = virtual_hosts(&decoded(&out, TypeUrl::RouteConfiguration)["route-8080"]);
    let inside = "default/inside/rule/0/match/0".to_string();
    let open = "default/open/rule/0/match/0".to_string();
    assert_eq!(hosts["a.example.com"].1, vec![inside, open.clone()]);
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
    let configs = decoded::<RouteConfiguration>(&out, TypeUrl::RouteConfiguration);
    assert!(virtual_hosts(&configs["route-8081"])["*"].1.is_empty());
    assert_eq!(virtual_hosts(&configs["route-8082"])["*"].1, vec!["default/r2/rule/0/match/0"]);
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
    ] {
        assert_eq!(graph.foreign(&k), foreign, "{k}");
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
    let configs = decoded::<RouteConfiguration>(&out, TypeUrl::RouteConfiguration);
    let routes = &virtual_hosts(&configs["route-8081"])["*"].1;
    assert_eq!(routes.len(), 2, "both of its routes: {routes:?}");
    assert!(!graph.foreign(&key(Kind::AIGatewayRoute, "r-theirs")));
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
    assert!(!graph.foreign(&key(Kind::Gateway, "gw")));
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
