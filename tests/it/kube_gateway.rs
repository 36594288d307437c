//! Gateway API ownership and status in a cluster, through the test API server: aixds programs
//! and reports on the Gateways of its own GatewayClasses only, and a Gateway is `Programmed`
//! once an Envoy has ACKed what was compiled from it.

use std::net::SocketAddr;

use aixds::bootstrap::BootstrapOptions;
use serde_json::{Value, json};

use crate::harness::*;
use crate::kubeapi::TestApi;
use crate::kubernetes::{backend_yaml, condition, kube_options, lease, run_options, status_patch};

const CONTROLLER: &str = "aixds.io/gateway-controller";

fn objects(mine_port: u16, theirs_port: u16, upstream: SocketAddr) -> String {
    let gateway = |name: &str, class: &str, port: u16| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}}}\n\
             spec: {{gatewayClassName: {class}, listeners: [{{name: http, protocol: HTTP, port: {port}}}, \
             {{name: raw, protocol: TCP, port: {}}}]}}\n---\n",
            port + 1
        )
    };
    let route = |name: &str, gateway: &str, backend: &str| {
        format!(
            "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {{name: {name}}}\n\
             spec:\n  parentRefs: [{{name: {gateway}}}]\n  rules:\n\
             \x20 - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: m}}]}}]\n\
             \x20   backendRefs: [{{name: {backend}}}]\n---\n"
        )
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: mine}}\n\
         spec: {{controllerName: {CONTROLLER}}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: theirs}}\n\
         spec: {{controllerName: example.com/another-controller}}\n---\n{}{}{}{}{}---\n{}",
        gateway("gw-mine", "mine", mine_port),
        gateway("gw-theirs", "theirs", theirs_port),
        route("r-mine", "gw-mine", "a"),
        route("r-theirs", "gw-theirs", "theirs-only"),
        backend_yaml("a", upstream),
        backend_yaml("theirs-only", upstream),
    )
}

const GATEWAYS: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/default/gateways";
const CLASSES: &str = "/apis/gateway.networking.k8s.io/v1/gatewayclasses";

fn listener<'a>(status: &'a Value, name: &str) -> &'a Value {
    let listeners = status["listeners"].as_array().unwrap();
    listeners.iter().find(|l| l["name"] == name).unwrap_or_else(|| panic!("{name} in {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_its_own_gateways_are_programmed_and_get_status_which_follows_envoy() {
    let upstream = Upstream::start("A").await;
    let api = TestApi::new().await;
    let (mine, theirs) = (free_port(), free_port());
    api.apply_yaml(&objects(mine, theirs, upstream.addr));
    api.apply_yaml(
        "apiVersion: v1\nkind: Service\nmetadata: {name: envoy}\n\
         spec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}\n",
    );
    let mut kube = kube_options(&api, Some(lease("only")));
    kube.gateway_service =
        Some(aixds::api::ObjectKey::new(aixds::api::Kind::Service, "default", "envoy"));
    let mut opts = run_options(kube, "127.0.0.1:0".parse().unwrap(), 1975, None);
    opts.compile.controller_name = Some(CONTROLLER.into());
    opts.compile.listener_address = "127.0.0.1".into();
    let running = aixds::run::start(opts).await.expect("aixds starts");

    // No Envoy yet: accepted, not programmed.
    let path = format!("{GATEWAYS}/gw-mine/status");
    let body = status_patch(&api, &path, |_| true).await;
    let status = &body["status"];
    assert_eq!(condition(&status["conditions"], "Accepted")["status"], "True");
    assert_eq!(condition(&status["conditions"], "Accepted")["reason"], "ListenersNotValid");
    let programmed = condition(&status["conditions"], "Programmed");
    assert_eq!(
        (&programmed["status"], &programmed["reason"]),
        (&json!("False"), &json!("Pending"))
    );
    assert_eq!(status["addresses"], json!([{"type": "IPAddress", "value": "10.96.0.10"}]));

    // A load balancer gives the Envoy Service its addresses: the Gateway reports those.
    api.apply_yaml(
        "apiVersion: v1\nkind: Service\nmetadata: {name: envoy}\n\
         spec: {clusterIP: 10.96.0.10, type: LoadBalancer, ports: [{port: 80}]}\n\
         status: {loadBalancer: {ingress: [{ip: 203.0.113.7}, {hostname: lb.example.com}]}}\n",
    );
    let body = status_patch(&api, &path, |b| {
        b["status"]["addresses"].as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    assert_eq!(
        body["status"]["addresses"],
        json!([{"type": "IPAddress", "value": "203.0.113.7"}, {"type": "Hostname", "value": "lb.example.com"}])
    );
    let status = &body["status"];
    let http = listener(status, "http");
    assert_eq!(http["attachedRoutes"], 1);
    assert_eq!(
        http["supportedKinds"],
        json!([
            {"group": "aigateway.envoyproxy.io", "kind": "AIGatewayRoute"},
            {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}
        ])
    );
    for (type_, want) in [("Accepted", "True"), ("ResolvedRefs", "True"), ("Conflicted", "False")] {
        assert_eq!(condition(&http["conditions"], type_)["status"], want, "{type_}: {http}");
    }
    let raw = listener(status, "raw");
    assert_eq!(condition(&raw["conditions"], "Accepted")["reason"], "UnsupportedProtocol");
    assert_eq!(condition(&raw["conditions"], "Programmed")["status"], "False");
    assert_eq!(raw["attachedRoutes"], 0);

    let class = status_patch(&api, &format!("{CLASSES}/mine/status"), |_| true).await;
    for type_ in ["Accepted", "SupportedVersion"] {
        assert_eq!(condition(&class["status"]["conditions"], type_)["status"], "True", "{type_}");
    }

    // An Envoy connects and ACKs: the Gateway and its listener are programmed.
    let envoy_admin = free_port();
    let _envoy = start_envoy(&BootstrapOptions {
        node_id: "gateway-status".into(),
        admin_port: envoy_admin,
        xds_address: running.xds_addr.expect("a TCP listener").to_string(),
        ..Default::default()
    });
    let programmed = |b: &Value| {
        b["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Programmed" && c["status"] == "True"))
    };
    let body = status_patch(&api, &path, programmed).await;
    let http = listener(&body["status"], "http");
    assert_eq!(condition(&http["conditions"], "Programmed")["status"], "True");
    eventually(20, "gw-mine's listener serves", || async {
        (served_by(mine, "m").await == Ok("A".into())).then_some(())
    })
    .await;

    // Another controller's Gateway: not programmed, and nothing of its is written.
    assert_eq!(served_by(theirs, "m").await, Err(0), "nothing listens on its port");
    let dump = admin_get(envoy_admin, "/config_dump").await;
    assert!(
        dump.contains(&format!("listener-{mine}")) && !dump.contains(&format!("listener-{theirs}"))
    );
    let route_status = "/apis/aigateway.envoyproxy.io/v1beta1/namespaces/default/aigatewayroutes";
    status_patch(&api, &format!("{route_status}/r-mine/status"), |_| true).await;
    let foreign = [
        format!("{GATEWAYS}/gw-theirs/status"),
        format!("{CLASSES}/theirs/status"),
        format!("{route_status}/r-theirs/status"),
        "/apis/aigateway.envoyproxy.io/v1beta1/namespaces/default/aiservicebackends/theirs-only/status"
            .to_string(),
    ];
    let written: Vec<String> = api.patches().into_iter().map(|p| p.path).collect();
    for path in &foreign {
        assert!(!written.contains(path), "aixds wrote {path}");
    }
    assert!(written.iter().any(|p| p.ends_with("aiservicebackends/a/status")));
    running.shutdown().await;
}
