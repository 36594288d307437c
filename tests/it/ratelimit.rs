//! Rate limits as compiled: every selector, cost and target shape gives entries Envoy takes, in
//! the routes they should be on and no others; a policy that is not accepted gives none.

use std::collections::BTreeMap;

use aixds::api::{Kind, ObjectKey};
use aixds::compile::{CompileOptions, Compiler};
use aixds::graph::Graph;
use aixds::xds::TypeUrl;
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteConfiguration, ScopedRouteConfiguration,
};
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::extensions::filters::http::ratelimit::v3::RateLimitPerRoute;
use prost::Message;

use crate::builders::{backend_to_backend, envoy_backend, parse};
use crate::compile::{decoded, envoy_validate};

const ROUTES: &str = "\
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: chat, namespace: ns}
spec:
  llmRequestCosts: [{metadataKey: total, type: TotalToken}]
  rules:
  - matches: [{headers: [{name: x-ai-eg-model, value: a}]}]
    backendRefs: [{name: one}]
  - matches: [{headers: [{name: x-ai-eg-model, value: b}]}]
    backendRefs: [{name: one, modelNameOverride: q}, {name: two}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: ns}
spec:
  rules:
  - matches: [{path: {type: PathPrefix, value: /web}}]
    backendRefs: [{name: svc, port: 80}]
";

const EVERY_SELECTOR: &str = "\
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: every, namespace: ns}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: chat}]
  rateLimit:
    type: Global
    global:
      rules:
      - clientSelectors:
        - headers:
          - {name: x-tenant-id, type: Distinct}
          - {name: x-team, value: red}
          - {name: x-env, type: RegularExpression, value: 'prod|stage', invert: true}
          sourceCIDR: {type: Distinct, value: 10.0.0.0/8}
          methods: [{value: POST}, {value: PUT}, {value: DELETE, invert: true}]
          path: {type: Exact, value: /v1/chat/completions}
        - sourceCIDR: {value: '2001:db8::/32'}
          path: {type: RegularExpression, value: '/v1/.*'}
        limit: {requests: 1000, unit: Hour}
        cost:
          request: {from: Number, number: 0}
          response: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: total}}
      - clientSelectors: [{path: {value: /v1/}}]
        limit: {requests: 5, unit: Second}
        shared: true
        shadowMode: true
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: web, namespace: ns}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: web}]
  rateLimit: {type: Global, global: {rules: [{limit: {requests: 10, unit: Minute}}]}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: QuotaPolicy
metadata: {name: q, namespace: ns}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: one}]
  serviceQuota: {quota: {limit: 100000, duration: 1d}}
  perModelQuotas:
  - modelName: q
    quota:
      costExpression: 'input_tokens + output_tokens * 4u'
      defaultBucket: {limit: 1000, duration: 1h}
      bucketRules:
      - clientSelectors: [{headers: [{name: x-tenant-id, type: Distinct}]}]
        quota: {limit: 100, duration: 1m}
        shadowMode: true
";

fn graph(extra: &str) -> Graph {
    let mut graph = Graph::new();
    for doc in format!("{ROUTES}---\n{extra}").split("\n---\n") {
        graph.apply(parse(doc));
    }
    for o in [
        backend_to_backend("ns", "one", "one"),
        envoy_backend("ns", "one", "10.0.0.1"),
        backend_to_backend("ns", "two", "two"),
        envoy_backend("ns", "two", "10.0.0.2"),
        parse(
            "apiVersion: v1\nkind: Service\nmetadata: {name: svc, namespace: ns}\nspec: {clusterIP: 10.96.0.9, ports: [{port: 80}]}",
        ),
    ] {
        graph.apply(o);
    }
    graph
}

/// Everything compiled, and every Envoy route in it.
fn compiled(graph: &Graph) -> (Vec<aixds::xds::Update>, Vec<Route>) {
    let updates = Compiler::new(CompileOptions::default()).full(graph);
    // Every scope's routes, inline or in the RouteConfiguration the default scope names: a
    // route is in its model's scope, or in the default one.
    let scopes: BTreeMap<String, ScopedRouteConfiguration> =
        decoded(&updates, TypeUrl::ScopedRouteConfiguration);
    let named: BTreeMap<String, RouteConfiguration> =
        decoded(&updates, TypeUrl::RouteConfiguration);
    let configs =
        scopes.into_values().filter_map(|s| s.route_configuration).chain(named.into_values());
    let routes = configs.flat_map(|c| c.virtual_hosts).flat_map(|v| v.routes);
    (updates, routes.collect())
}

/// Per Envoy route name, how many rate limit entries it has (those charged when the stream is
/// done apart).
fn entries(graph: &Graph) -> (BTreeMap<String, (usize, usize)>, Vec<aixds::xds::Update>) {
    let (updates, routes) = compiled(graph);
    let mut out = BTreeMap::new();
    for route in &routes {
        let Some(any) = route.typed_per_filter_config.get("envoy.filters.http.ratelimit") else {
            continue;
        };
        let limits = RateLimitPerRoute::decode(any.value.as_slice()).unwrap().rate_limits;
        let done = limits.iter().filter(|l| l.apply_on_stream_done).count();
        out.insert(route.name.clone(), (limits.len() - done, done));
    }
    (out, updates)
}

#[test]
fn every_selector_cost_and_quota_compiles_to_entries_envoy_takes() {
    let graph = graph(EVERY_SELECTOR);
    for key in ["BackendTrafficPolicy/ns/every", "BackendTrafficPolicy/ns/web", "QuotaPolicy/ns/q"]
    {
        let (kind, rest) = key.split_once('/').unwrap();
        let (ns, name) = rest.split_once('/').unwrap();
        let node = graph.node(&ObjectKey::new(Kind::parse(kind).unwrap(), ns, name)).unwrap();
        assert!(node.accepted() && node.resolved(), "{key}: {:?}", node.conditions());
    }
    let (entries, updates) = entries(&graph);
    // Each chat rule: the policy's two rules (the first with a charge), the quota's service
    // bucket and the model quota's two buckets (check and charge each): on rule 1 because its
    // backendRef asks for model q, on rule 0 gated on the model header being q. The HTTPRoute
    // has no parentRefs, so it serves nothing and has no routes.
    assert_eq!(
        entries,
        BTreeMap::from([
            ("ns/chat/rule/0/match/0".to_string(), (5, 4)),
            ("ns/chat/rule/1/match/0".to_string(), (5, 4)),
        ])
    );
    if let Err(output) = envoy_validate(&updates) {
        panic!("envoy rejected the config:\n{output}");
    }
}

#[test]
fn local_rules_give_each_route_token_buckets_envoy_takes() {
    let graph = graph(
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\n\
         metadata: {name: local, namespace: ns}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: chat}]\n\
         \x20 rateLimit:\n    type: Local\n    local:\n      rules:\n\
         \x20     - {limit: {requests: 100, unit: Second}}\n\
         \x20     - {clientSelectors: [{headers: [{name: x-tenant-id, type: Distinct}, {name: x-team, value: red}], methods: [{value: POST}]}], limit: {requests: 5, unit: Minute}, shadowMode: true}\n",
    );
    let (updates, routes) = compiled(&graph);
    let route = routes.iter().find(|r| r.name == "ns/chat/rule/0/match/0").unwrap();
    let any = &route.typed_per_filter_config["envoy.filters.http.local_ratelimit"];
    let local = LocalRateLimit::decode(any.value.as_slice()).unwrap();
    assert_eq!(local.descriptors.len(), 2);
    assert_eq!(local.rate_limits.len(), 2);
    let tenant = &local.descriptors[1].entries[1];
    assert_eq!(
        (tenant.key.as_str(), tenant.value.as_str()),
        ("s0.h0:x-tenant-id", ""),
        "a bucket per value"
    );
    assert!(local.descriptors[1].shadow_mode);
    assert!(!route.typed_per_filter_config.contains_key("envoy.filters.http.ratelimit"));
    if let Err(output) = envoy_validate(&updates) {
        panic!("envoy rejected the config:\n{output}");
    }
}

#[test]
fn a_policy_not_accepted_limits_nothing_and_says_why() {
    let graph = graph(
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\n\
         metadata: {name: bad, namespace: ns}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: chat}]\n\
         \x20 rateLimit: {type: Global, global: {rules: [{limit: {requests: 1, unit: Week}}]}}\n  retry: {numRetries: 2}",
    );
    let node = graph.node(&ObjectKey::new(Kind::BackendTrafficPolicy, "ns", "bad")).unwrap();
    let accepted = node.conditions().iter().find(|c| !c.is_good()).expect("not accepted");
    assert!(accepted.message.contains("spec.retry is not supported"), "{accepted:?}");
    assert!(entries(&graph).0.is_empty());
}

#[test]
fn a_gateway_policy_applies_to_its_routes_unless_a_route_has_its_own() {
    let gateway = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: ns}\n\
        spec: {gatewayClassName: c, listeners: [{name: http, protocol: HTTP, port: 8080}]}\n---\n\
        apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\nmetadata: {name: all, namespace: ns}\n\
        spec: {targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}], \
        rateLimit: {type: Global, global: {rules: [{limit: {requests: 1, unit: Second}}, {limit: {requests: 2, unit: Second}}]}}}\n---\n\
        apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\nmetadata: {name: web, namespace: ns}\n\
        spec: {targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: web}], \
        rateLimit: {type: Global, global: {rules: [{limit: {requests: 10, unit: Minute}}]}}}";
    let mut graph = graph(gateway);
    for name in ["chat", "web"] {
        let mut route = graph
            .object(&ObjectKey::new(
                if name == "chat" { Kind::AIGatewayRoute } else { Kind::HTTPRoute },
                "ns",
                name,
            ))
            .unwrap()
            .as_ref()
            .clone();
        match &mut route.spec {
            aixds::api::Spec::AIGatewayRoute(r) => {
                r.parent_refs = vec![serde_norway::from_str("{name: gw}").unwrap()]
            }
            aixds::api::Spec::HTTPRoute(r) => {
                r.parent_refs = vec![serde_norway::from_str("{name: gw}").unwrap()]
            }
            _ => unreachable!(),
        }
        graph.apply(route);
    }
    let (entries, _) = entries(&graph);
    assert_eq!(entries["ns/chat/rule/0/match/0"], (2, 0), "the Gateway's two rules");
    let web = graph.node(&ObjectKey::new(Kind::HTTPRoute, "ns", "web")).unwrap();
    assert!(web.accepted(), "{:?}", web.conditions());
    assert_eq!(
        entries["httproute/ns/web/rule/0/match/0"],
        (1, 0),
        "its own policy replaces the Gateway's"
    );
}
