//! Generated graphs compile to config a real Envoy accepts (`envoy --mode validate` on a static
//! bootstrap holding the compiled resources). A small sample, since each check starts Envoy:
//! a complete chain (Gateway, route, backends, an Envoy Backend, a pool with a pod, an HTTPRoute
//! to the pool and a Service) that
//! random edits then change, break and extend.

use aixds::api::Kind;
use aixds::xds::TypeUrl;
use proptest::prelude::*;

use super::incremental::{Edit, batches, fresh, incremental};
use crate::builders::parse;
use crate::compile::{dump, envoy_validate};

fn base() -> Vec<Edit> {
    [
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: mine}\nspec: {controllerName: aixds.io/gateway-controller}\n",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: a, namespace: ns}\nspec: {gatewayClassName: mine, listeners: [{name: http, protocol: HTTP, port: 8080}]}\n",
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {name: a, namespace: ns}\nspec:\n  parentRefs: [{name: a}]\n  rules:\n  - matches: [{headers: [{name: x-ai-eg-model, value: m0}]}]\n    backendRefs: [{name: a, priority: 0}, {name: b, priority: 1}]\n  - matches: [{headers: [{name: x-ai-eg-model, value: m1}]}]\n    backendRefs: [{name: a, group: inference.networking.k8s.io, kind: InferencePool}]\n",
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {name: a, namespace: ns}\nspec: {schema: {name: OpenAI}, backendRef: {name: a, group: gateway.envoyproxy.io, kind: Backend}}\n",
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {name: b, namespace: ns}\nspec: {schema: {name: Anthropic}, backendRef: {name: b, group: gateway.envoyproxy.io, kind: Backend}}\n",
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: a, namespace: ns}\nspec: {endpoints: [{ip: {address: 10.0.0.1, port: 8080}}]}\n",
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: b, namespace: ns}\nspec: {endpoints: [{fqdn: {hostname: api.example.com, port: 443}}]}\n",
        "apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\nmetadata: {name: a, namespace: ns}\nspec: {selector: {matchLabels: {app: a}}, targetPorts: [{number: 8000}], endpointPickerRef: {name: a, port: {number: 9002}}}\n",
        "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns}\nspec: {ports: [{port: 9002}]}\n",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: ns, labels: {app: a}}\nstatus: {podIP: 10.1.0.1}\n",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: h, namespace: ns}\nspec:\n  parentRefs: [{name: a}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /pool}}]\n    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: a, port: 9002}}}]\n    backendRefs: [{name: a, group: inference.networking.k8s.io, kind: InferencePool, weight: 3}, {name: a, port: 9002}]\n  - matches: [{path: {type: Exact, value: /redirect}}]\n    filters: [{type: RequestRedirect, requestRedirect: {hostname: b.example.com, statusCode: 308}}]\n",
    ]
    .iter()
    .map(|yaml| Edit::Apply(Box::new(parse(yaml))))
    .collect()
}

proptest! {
    #![proptest_config(proptest::test_runner::Config { max_shrink_iters: 50, ..super::config(8) })]

    /// 8 graphs, each the base chain after up to 9 batches of random edits.
    #[test]
    fn generated_graphs_compile_to_config_envoy_accepts(mut edits in batches()) {
        edits.insert(0, base());
        let (_, objects) = incremental(&edits);
        let (graph, updates) = fresh(objects);
        let clusters = updates.iter().filter(|u| u.type_url == TypeUrl::Cluster).count();
        let routes = graph.objects().filter(|o| o.key.kind == Kind::AIGatewayRoute).count();
        if let Err(output) = envoy_validate(&updates) {
            panic!("envoy rejected the config of {} objects ({routes} routes, {clusters} clusters):\n{output}\n{}", graph.len(), dump(&updates));
        }
    }
}
