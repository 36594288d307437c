//! The dependency graph: conditions, placeholders, and the affected set per change.

use aixds::api::{Kind, ObjectKey};
use aixds::graph::{ConditionType, Graph, Reason, RefKind};

use crate::builders::*;

fn key(kind: Kind, ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(kind, ns, name)
}

fn resolved_refs(graph: &Graph, k: &ObjectKey) -> (bool, Reason, String) {
    let node = graph.node(k).unwrap_or_else(|| panic!("{k} missing"));
    let c = node
        .conditions()
        .iter()
        .find(|c| c.type_ == ConditionType::ResolvedRefs)
        .unwrap_or_else(|| panic!("{k} has no ResolvedRefs"));
    (c.status, c.reason, c.message.clone())
}

#[test]
fn backend_to_missing_pool_flips_when_pool_appears() {
    for pool_ns in ["default", "models"] {
        let mut graph = Graph::new();
        let target =
            if pool_ns == "default" { "llama".to_string() } else { format!("{pool_ns}/llama") };
        graph.apply(backend_to_pool("default", "b", &target));
        let b = key(Kind::AIServiceBackend, "default", "b");
        let (ok, reason, message) = resolved_refs(&graph, &b);
        assert!(!ok);
        assert_eq!(reason, Reason::BackendNotFound);
        assert_eq!(message, format!("InferencePool {pool_ns}/llama not found"));
        let placeholder = graph.node(&key(Kind::InferencePool, pool_ns, "llama")).unwrap();
        assert!(placeholder.is_placeholder());

        let affected = graph.apply(pool(pool_ns, "llama", "llama"));
        assert!(affected.contains(&b), "{affected:?}");
        assert!(resolved_refs(&graph, &b).0, "{:?}", resolved_refs(&graph, &b));

        // Deleting the pool turns it back into a placeholder and the backend reports it again.
        graph.delete(&key(Kind::InferencePool, pool_ns, "llama"));
        assert_eq!(resolved_refs(&graph, &b).1, Reason::BackendNotFound);
    }
}

#[test]
fn route_reports_missing_pool_and_unresolved_backend() {
    let mut graph = Graph::new();
    graph.apply(route("default", "r").pool("gone").backend("b").build());
    graph.apply(backend_to_pool("default", "b", "also-gone"));
    let (ok, reason, message) = resolved_refs(&graph, &key(Kind::AIGatewayRoute, "default", "r"));
    assert!(!ok);
    assert_eq!(reason, Reason::BackendNotResolved);
    assert_eq!(
        message,
        "AIServiceBackend default/b: InferencePool default/also-gone not found; \
         InferencePool default/gone not found"
    );
}

#[test]
fn unsupported_backend_ref_kind_is_rejected() {
    let mut graph = Graph::new();
    graph.apply(service_backend("default", "b", "", "Service", "svc"));
    let node = graph.node(&key(Kind::AIServiceBackend, "default", "b")).unwrap();
    assert!(!node.accepted());
    let accepted = &node.conditions()[0];
    assert_eq!(accepted.reason, Reason::InvalidKind);
    assert_eq!(
        accepted.message,
        "backendRef must be a gateway.envoyproxy.io Backend or an inference.networking.k8s.io \
         InferencePool, not Service \"svc\""
    );
    assert!(graph.references(&key(Kind::AIServiceBackend, "default", "b")).is_empty());
}

#[test]
fn affected_set_of_a_pool_is_exactly_its_referrers_in_any_namespace() {
    let mut graph = Graph::new();
    graph.apply(pool("models", "llama", "llama"));
    graph.apply(service("models", "llama-epp", 9002));
    graph.apply(backend_to_pool("team-a", "direct", "models/llama"));
    graph.apply(backend_to_pool("models", "same-ns", "llama"));
    graph.apply(backend_to_pool("team-a", "other", "models/mistral"));
    graph.apply(route("team-a", "via-backend").backend("direct").build());
    graph.apply(route("team-b", "via-pool").pool("models/llama").build());
    graph.apply(route("team-b", "unrelated").backend("team-a/other").build());
    graph.apply(pod("models", "p1", "llama", "10.0.0.1"));

    let affected = graph.apply(pool("models", "llama", "llama"));
    let mut keys: Vec<String> = affected.keys.iter().map(|k| k.to_string()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "AIGatewayRoute/team-a/via-backend",
            "AIGatewayRoute/team-b/via-pool",
            "AIServiceBackend/models/same-ns",
            "AIServiceBackend/team-a/direct",
            "InferencePool/models/llama",
        ]
    );
    assert_eq!(affected.keys[0], key(Kind::InferencePool, "models", "llama"));
}

#[test]
fn pods_join_and_leave_pools_by_label() {
    let mut graph = Graph::new();
    graph.apply(pool("ns", "a", "a"));
    graph.apply(pool("ns", "b", "b"));
    graph.apply(pool("other", "a", "a"));
    let pa = key(Kind::InferencePool, "ns", "a");
    let pb = key(Kind::InferencePool, "ns", "b");
    let selected = |g: &Graph, pool: &ObjectKey| -> Vec<String> {
        g.references(pool)
            .into_iter()
            .filter(|(k, _)| *k == RefKind::Selects)
            .map(|(_, n)| n.key.name.clone())
            .collect()
    };

    let affected = graph.apply(pod("ns", "p1", "a", "10.0.0.1"));
    assert!(affected.contains(&pa) && !affected.contains(&pb));
    assert!(!affected.contains(&key(Kind::InferencePool, "other", "a")), "namespaced selection");
    assert_eq!(selected(&graph, &pa), ["p1"]);

    // Relabelling moves the pod: both the old and the new pool are affected.
    let affected = graph.apply(pod("ns", "p1", "b", "10.0.0.1"));
    assert!(affected.contains(&pa) && affected.contains(&pb), "{affected:?}");
    assert!(selected(&graph, &pa).is_empty());
    assert_eq!(selected(&graph, &pb), ["p1"]);

    // A pool created after its pods finds them.
    graph.apply(pod("ns", "p2", "c", "10.0.0.2"));
    graph.apply(pool("ns", "c", "c"));
    assert_eq!(selected(&graph, &key(Kind::InferencePool, "ns", "c")), ["p2"]);

    let affected = graph.delete(&key(Kind::Pod, "ns", "p1"));
    assert!(affected.contains(&pb));
    assert!(selected(&graph, &pb).is_empty());
    assert!(graph.node(&key(Kind::Pod, "ns", "p1")).is_none());
}

#[test]
fn placeholders_go_when_nothing_references_them() {
    let mut graph = Graph::new();
    graph.apply(backend_to_pool("default", "b", "p"));
    assert!(graph.node(&key(Kind::InferencePool, "default", "p")).is_some());
    graph.apply(backend_to_backend("default", "b", "eb"));
    assert!(graph.node(&key(Kind::InferencePool, "default", "p")).is_none());
    graph.delete(&key(Kind::AIServiceBackend, "default", "b"));
    assert!(graph.is_empty(), "{:?}", graph.nodes().iter().map(|n| &n.key).collect::<Vec<_>>());
}

#[test]
fn policy_change_affects_its_targets_and_their_routes() {
    let mut graph = Graph::new();
    graph.apply(backend_to_backend("default", "b", "eb"));
    graph.apply(envoy_backend("default", "eb", "127.0.0.1"));
    graph.apply(route("default", "r").backend("b").build());
    let policy = parse(
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: BackendSecurityPolicy\n\
         metadata: {name: key, namespace: default}\nspec:\n  targetRefs: [{group: \
         aigateway.envoyproxy.io, kind: AIServiceBackend, name: b}]\n  type: APIKey\n  apiKey: \
         {secretRef: {name: s}}\n",
    );
    graph.apply(policy);
    let p = key(Kind::BackendSecurityPolicy, "default", "key");
    assert_eq!(resolved_refs(&graph, &p).1, Reason::SecretNotFound);
    let secret = parse(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: default}\nstringData: {apiKey: sk-1}\n",
    );
    let affected = graph.apply(secret);
    let mut names: Vec<String> = affected.keys.iter().map(|k| k.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "AIGatewayRoute/default/r",
            "AIServiceBackend/default/b",
            "BackendSecurityPolicy/default/key",
            "Secret/default/s"
        ]
    );
    assert!(resolved_refs(&graph, &p).0);
}

#[test]
fn missing_picker_service_is_an_invalid_extension_ref() {
    let mut graph = Graph::new();
    graph.apply(pool("default", "p", "p"));
    let pk = key(Kind::InferencePool, "default", "p");
    let (ok, reason, message) = resolved_refs(&graph, &pk);
    assert!(!ok);
    assert_eq!(reason, Reason::InvalidExtensionRef);
    assert_eq!(message, "endpoint picker Service default/p-epp not found");
    graph.apply(service("default", "p-epp", 9999));
    assert_eq!(
        resolved_refs(&graph, &pk).2,
        "endpoint picker Service default/p-epp has no port 9002"
    );
    graph.apply(service("default", "p-epp", 9002));
    assert!(resolved_refs(&graph, &pk).0);
}

#[test]
fn every_kind_parses_from_upstream_style_yaml() {
    let docs = [
        ("aigateway.envoyproxy.io/v1alpha1", "AIGatewayRoute", "spec: {rules: []}"),
        (
            "aigateway.envoyproxy.io/v1beta1",
            "AIServiceBackend",
            "spec: {schema: {name: Anthropic}, backendRef: {name: x, group: gateway.envoyproxy.io, kind: Backend}}",
        ),
        (
            "aigateway.envoyproxy.io/v1beta1",
            "BackendSecurityPolicy",
            "spec: {type: AWSCredentials, awsCredentials: {region: us-east-1}}",
        ),
        (
            "gateway.envoyproxy.io/v1alpha1",
            "Backend",
            "spec: {endpoints: [{unix: {path: /tmp/s}}]}",
        ),
        (
            "inference.networking.k8s.io/v1",
            "InferencePool",
            "spec: {selector: {matchLabels: {a: b}}, targetPorts: [{number: 1}], endpointPickerRef: {name: e, failureMode: FailOpen}}",
        ),
        (
            "gateway.networking.k8s.io/v1",
            "Gateway",
            "spec: {gatewayClassName: c, listeners: [{name: l, port: 80, protocol: HTTP}]}",
        ),
        ("gateway.networking.k8s.io/v1", "GatewayClass", "spec: {controllerName: c}"),
        (
            "gateway.networking.k8s.io/v1beta1",
            "ReferenceGrant",
            "spec: {from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: a}], to: [{group: '', kind: Secret}]}",
        ),
        ("v1", "Secret", "data: {k: dg==}"),
        ("v1", "Service", "spec: {ports: [{port: 80, targetPort: 8080}], selector: {a: b}}"),
        ("v1", "Pod", "status: {podIP: 10.1.1.1, phase: Running}"),
    ];
    for (api_version, kind, rest) in docs {
        let o = parse(&format!(
            "apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: n}}\n{rest}\n"
        ));
        assert_eq!(o.key.kind.as_str(), kind);
        let expected_ns = if kind == "GatewayClass" { "" } else { "default" };
        assert_eq!(o.key.namespace, expected_ns, "{kind}");
    }
}

#[test]
fn deleting_a_route_to_a_missing_gateway_drops_the_placeholder() {
    let mut graph = Graph::new();
    graph.apply(parse(
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {name: r, namespace: ns}\nspec:\n  parentRefs: [{name: gone}]\n  rules: [{backendRefs: [{name: b}]}]\n",
    ));
    let gone = key(Kind::Gateway, "ns", "gone");
    assert!(graph.node(&gone).is_some_and(|n| n.is_placeholder()));
    let route = key(Kind::AIGatewayRoute, "ns", "r");
    let affected = graph.delete(&route);
    assert_eq!(affected.keys, [route, gone.clone()]);
    assert!(graph.node(&gone).is_none());
    assert!(graph.is_empty(), "{:?}", graph.nodes());
}

/// Found by the incremental property: a policy that moves to another target takes its
/// credential problem off the old target's conditions.
#[test]
fn a_policy_moved_to_another_target_leaves_the_old_one_clean() {
    let policy = |target: &str| {
        parse(&format!(
            "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: BackendSecurityPolicy\n\
             metadata: {{name: p, namespace: ns}}\nspec:\n  targetRefs: [{{group: aigateway.envoyproxy.io, \
             kind: AIServiceBackend, name: {target}}}]\n  type: APIKey\n  apiKey: {{secretRef: {{name: s}}}}\n"
        ))
    };
    let mut graph = Graph::new();
    graph.apply(backend_to_backend("ns", "b", "eb"));
    graph.apply(envoy_backend("ns", "eb", "10.0.0.1"));
    graph.apply(policy("b"));
    let b = key(Kind::AIServiceBackend, "ns", "b");
    let (resolved, _, message) = resolved_refs(&graph, &b);
    assert!(!resolved && message.contains("Secret ns/s not found"), "{message}");
    let affected = graph.apply(policy("other"));
    assert!(affected.keys.contains(&b), "{:?}", affected.keys);
    let (resolved, _, message) = resolved_refs(&graph, &b);
    assert!(resolved, "{message}");
}

#[test]
fn cohere_backends_are_accepted_for_the_api_version_aixds_speaks() {
    let backend = |version: &str| {
        parse(&format!(
            "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\n\
             metadata: {{name: co, namespace: default}}\n\
             spec: {{schema: {{name: Cohere{version}}}, backendRef: {{name: co, group: gateway.envoyproxy.io, kind: Backend}}}}\n"
        ))
    };
    let co = key(Kind::AIServiceBackend, "default", "co");
    for version in ["", ", version: v2"] {
        let mut graph = Graph::new();
        graph.apply(backend(version));
        let node = graph.node(&co).unwrap();
        assert!(node.accepted(), "{version}: {:?}", node.conditions());
    }
    let mut graph = Graph::new();
    graph.apply(backend(", version: v1"));
    let node = graph.node(&co).unwrap();
    assert!(!node.accepted());
    let accepted = &node.conditions()[0];
    assert_eq!(accepted.reason, Reason::Unsupported);
    assert!(
        accepted.message.contains("Cohere API version \"v1\" is not supported"),
        "{accepted:?}"
    );
}

/// GIE v1's app protocols are `http` and `kubernetes.io/h2c`: a pool naming another is not
/// accepted, and says which it takes.
#[test]
fn a_pool_of_unknown_app_protocol_is_not_accepted() {
    for (protocol, accepted) in [("http", true), ("kubernetes.io/h2c", true), ("grpc", false)] {
        let mut graph = Graph::new();
        graph.apply(parse(&format!(
            "apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\n\
             metadata: {{name: p, namespace: default}}\n\
             spec: {{selector: {{matchLabels: {{app: x}}}}, targetPorts: [{{number: 8000}}], \
             appProtocol: {protocol}}}\n"
        )));
        let node = graph.node(&key(Kind::InferencePool, "default", "p")).unwrap();
        assert_eq!(node.accepted(), accepted, "{protocol}: {:?}", node.conditions());
        if !accepted {
            let c = node.conditions().iter().find(|c| c.type_ == ConditionType::Accepted).unwrap();
            assert!(c.message.contains("kubernetes.io/h2c"), "{}", c.message);
        }
    }
}
