//! Builders that state a test's objects in a line each. They write upstream-style YAML and parse
//! it with the real parser, so every builder is also a parsing test.

use aixds::api::{Object, ParseOutcome, parse_document};

pub fn parse(yaml: &str) -> Object {
    match parse_document(yaml) {
        Ok(ParseOutcome::Object(o)) => *o,
        other => panic!("not an object: {other:?}\n{yaml}"),
    }
}

/// `AIGatewayRoute` with one rule per backendRef (model = target name).
pub struct Route {
    ns: String,
    name: String,
    refs: Vec<String>,
}

pub fn route(ns: &str, name: &str) -> Route {
    Route { ns: ns.into(), name: name.into(), refs: Vec::new() }
}

impl Route {
    /// A rule to an AIServiceBackend; `target` is `name` or `namespace/name`.
    pub fn backend(mut self, target: &str) -> Self {
        self.refs.push(backend_ref("", "", target));
        self
    }

    /// A rule straight to an InferencePool.
    pub fn pool(mut self, target: &str) -> Self {
        self.refs.push(backend_ref("inference.networking.k8s.io", "InferencePool", target));
        self
    }

    pub fn build(self) -> Object {
        let rules: String = self
            .refs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                format!(
                    "  - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: m{i}}}]}}]\n    backendRefs: [{r}]\n"
                )
            })
            .collect();
        parse(&format!(
            "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {{name: {}, namespace: {}}}\nspec:\n  rules:\n{rules}",
            self.name, self.ns
        ))
    }
}

fn backend_ref(group: &str, kind: &str, target: &str) -> String {
    let (ns, name) = match target.split_once('/') {
        Some((ns, name)) => (format!(", namespace: {ns}"), name),
        None => (String::new(), target),
    };
    let gk =
        if kind.is_empty() { String::new() } else { format!(", group: {group}, kind: {kind}") };
    format!("{{name: {name}{ns}{gk}}}")
}

/// `AIServiceBackend` whose backendRef is `group`/`kind` `target` (`name` or `ns/name`).
pub fn service_backend(ns: &str, name: &str, group: &str, kind: &str, target: &str) -> Object {
    parse(&format!(
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  schema: {{name: OpenAI}}\n  backendRef: {}\n",
        backend_ref(group, kind, target)
    ))
}

pub fn backend_to_pool(ns: &str, name: &str, pool: &str) -> Object {
    service_backend(ns, name, "inference.networking.k8s.io", "InferencePool", pool)
}

pub fn backend_to_backend(ns: &str, name: &str, backend: &str) -> Object {
    service_backend(ns, name, "gateway.envoyproxy.io", "Backend", backend)
}

pub fn envoy_backend(ns: &str, name: &str, ip: &str) -> Object {
    parse(&format!(
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  endpoints: [{{ip: {{address: {ip}, port: 8080}}}}]\n"
    ))
}

/// `InferencePool` selecting `app: <app>` on port 8000, with picker Service `<name>-epp`.
pub fn pool(ns: &str, name: &str, app: &str) -> Object {
    parse(&format!(
        "apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: {app}}}}}\n  targetPorts: [{{number: 8000}}]\n  endpointPickerRef: {{name: {name}-epp, port: {{number: 9002}}}}\n"
    ))
}

pub fn service(ns: &str, name: &str, port: u16) -> Object {
    parse(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ports: [{{port: {port}}}]\n"
    ))
}

pub fn pod(ns: &str, name: &str, app: &str, ip: &str) -> Object {
    parse(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}\nstatus: {{podIP: {ip}}}\n"
    ))
}
