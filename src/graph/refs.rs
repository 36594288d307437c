//! Per kind: which references an object declares, what is wrong with it on its own, and the
//! conditions that follow once its references are looked up in the graph.

use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use serde::Serialize;

use super::{Condition, ConditionType, Graph, Issue, Reason, listeners};
use crate::api::{
    AIGATEWAY_GROUP, APISchema, BackendTarget, ENVOY_GATEWAY_GROUP, GATEWAY_API_GROUP,
    GCP_SERVICE_ACCOUNT_KEY, INFERENCE_GROUP, Kind, MAX_ROUTE_HOSTNAMES, Object, ObjectKey,
    PolicyError, SecurityPolicyType, Spec, TLS_SECRET_TYPE, gcp_service_account, group_kind,
    tls_certificate_problem, validate_hostname,
};
use crate::extproc::translate::COHERE_API_VERSION;

/// The field a reference comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RefKind {
    /// AIGatewayRoute or HTTPRoute → Gateway.
    ParentRef,
    /// AIGatewayRoute → AIServiceBackend or InferencePool; AIServiceBackend → Backend or
    /// InferencePool; HTTPRoute → Service, InferencePool or Backend (its mirrors' too).
    BackendRef,
    /// BackendSecurityPolicy → AIServiceBackend or InferencePool; BackendTLSPolicy → Backend;
    /// BackendTrafficPolicy → Gateway, HTTPRoute or AIGatewayRoute; QuotaPolicy →
    /// AIServiceBackend.
    TargetRef,
    /// BackendSecurityPolicy → Secret.
    SecretRef,
    /// InferencePool → endpoint picker Service.
    EndpointPickerRef,
    /// InferencePool → Pod, by label selector; Service → EndpointSlice, by the slice's
    /// `kubernetes.io/service-name` label.
    Selects,
    /// Gateway → GatewayClass (`gatewayClassName`).
    GatewayClassName,
    /// Gateway → Secret (a listener's `tls.certificateRefs`).
    CertificateRef,
}

impl RefKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefKind::ParentRef => "parentRef",
            RefKind::BackendRef => "backendRef",
            RefKind::TargetRef => "targetRef",
            RefKind::SecretRef => "secretRef",
            RefKind::EndpointPickerRef => "endpointPickerRef",
            RefKind::Selects => "selects",
            RefKind::GatewayClassName => "gatewayClassName",
            RefKind::CertificateRef => "certificateRef",
        }
    }
}

fn accepted_issue(reason: Reason, message: impl Into<String>) -> Issue {
    Issue { type_: ConditionType::Accepted, reason, message: message.into() }
}

fn refs_issue(reason: Reason, message: impl Into<String>) -> Issue {
    Issue { type_: ConditionType::ResolvedRefs, reason, message: message.into() }
}

/// The references `object` declares and the problems it has on its own.
pub(super) fn references(object: &Object) -> (Vec<(RefKind, ObjectKey)>, Vec<Issue>) {
    let ns = object.key.namespace.as_str();
    let in_ns = |kind: Kind, namespace: &Option<String>, name: &str| {
        ObjectKey::new(kind, namespace.as_deref().unwrap_or(ns), name)
    };
    let mut refs = Vec::new();
    let mut issues = Vec::new();
    match &object.spec {
        Spec::AIGatewayRoute(route) => {
            route_common(object, &mut refs, &mut issues);
            for (c, cost) in route.llm_request_costs.iter().enumerate() {
                if cost.cost_type != crate::api::LLMRequestCostType::Cel {
                    continue;
                }
                let problem = match cost.cel.as_deref() {
                    None | Some("") => Some("type CEL needs a cel expression".to_string()),
                    Some(expression) => crate::extproc::cost::compile_cel(expression).err(),
                };
                if let Some(problem) = problem {
                    issues.push(accepted_issue(
                        Reason::Invalid,
                        format!("llmRequestCosts[{c}]: {problem}"),
                    ));
                }
            }
            for (r, rule) in route.rules.iter().enumerate() {
                if rule.backend_refs.is_empty() {
                    issues.push(accepted_issue(
                        Reason::Invalid,
                        format!("rules[{r}] has no backendRefs"),
                    ));
                }
                for m in rule.matches.iter().flat_map(|m| &m.headers) {
                    // Envoy rejects the whole RouteConfiguration for one bad header name.
                    if !crate::api::token(&m.name) {
                        issues.push(accepted_issue(
                            Reason::Invalid,
                            format!(
                                "rules[{r}] has a header match named {:?}, not an HTTP token",
                                m.name
                            ),
                        ));
                    }
                }
                for (b, backend) in rule.backend_refs.iter().enumerate() {
                    let group = backend.group.as_deref().unwrap_or(AIGATEWAY_GROUP);
                    let kind = backend.kind.as_deref().unwrap_or("AIServiceBackend");
                    let target = match (group, kind) {
                        (AIGATEWAY_GROUP, "AIServiceBackend") => Kind::AIServiceBackend,
                        (INFERENCE_GROUP, "InferencePool") => Kind::InferencePool,
                        _ => {
                            issues.push(refs_issue(
                                Reason::InvalidKind,
                                format!(
                                    "rules[{r}].backendRefs[{b}]: {kind}.{group} {:?} is not an \
                                     AIServiceBackend or InferencePool",
                                    backend.name
                                ),
                            ));
                            continue;
                        }
                    };
                    refs.push((
                        RefKind::BackendRef,
                        in_ns(target, &backend.namespace, &backend.name),
                    ));
                }
            }
        }
        Spec::HTTPRoute(route) => {
            route_common(object, &mut refs, &mut issues);
            for problem in route.problems() {
                issues.push(accepted_issue(Reason::UnsupportedValue, problem));
            }
            for (r, rule) in route.rules.iter().enumerate() {
                let filters = rule.filters.iter().map(|f| (format!("rules[{r}]"), f));
                let backend_filters =
                    rule.backend_refs.iter().enumerate().flat_map(|(b, backend)| {
                        backend
                            .filters
                            .iter()
                            .map(move |f| (format!("rules[{r}].backendRefs[{b}]"), f))
                    });
                for (at, filter) in filters.chain(backend_filters) {
                    if let Some(problem) = filter.problem() {
                        issues.push(accepted_issue(
                            Reason::UnsupportedValue,
                            format!("{at}.filters: {problem}"),
                        ));
                    }
                    if let Some(mirror) = filter
                        .request_mirror
                        .as_ref()
                        .filter(|_| filter.filter_type == crate::api::REQUEST_MIRROR)
                    {
                        match http_backend_key(&object.key, &mirror.backend_ref) {
                            Ok(target) => refs.push((RefKind::BackendRef, target)),
                            Err(message) => issues.push(refs_issue(
                                Reason::InvalidKind,
                                format!("{at}.filters: requestMirror.backendRef: {message}"),
                            )),
                        }
                    }
                }
                for (m, matched) in rule.matches.iter().enumerate() {
                    let named = matched.headers.iter().chain(&matched.query_params);
                    if named.clone().any(|h| h.name.is_empty()) {
                        issues.push(accepted_issue(
                            Reason::Invalid,
                            format!(
                                "rules[{r}].matches[{m}] has a header or query match with no name"
                            ),
                        ));
                    }
                }
                for (b, backend) in rule.backend_refs.iter().enumerate() {
                    match http_backend_key(&object.key, backend) {
                        Ok(target) => {
                            if target.kind == Kind::Service && backend.port.is_none() {
                                issues.push(accepted_issue(
                                    Reason::Invalid,
                                    format!("rules[{r}].backendRefs[{b}]: a Service needs a port"),
                                ));
                            }
                            refs.push((RefKind::BackendRef, target));
                        }
                        Err(message) => issues.push(refs_issue(
                            Reason::InvalidKind,
                            format!("rules[{r}].backendRefs[{b}]: {message}"),
                        )),
                    }
                }
            }
        }
        Spec::AIServiceBackend(backend) => {
            let version = backend.schema.version.as_deref().filter(|v| !v.is_empty());
            if backend.schema.name == APISchema::Cohere
                && let Some(v) = version.filter(|v| *v != COHERE_API_VERSION)
            {
                issues.push(accepted_issue(
                    Reason::Unsupported,
                    format!(
                        "Cohere API version {v:?} is not supported; aixds speaks Cohere's \
                         {COHERE_API_VERSION} (leave version out, or set it to {COHERE_API_VERSION})"
                    ),
                ));
            }
            let r = &backend.backend_ref;
            match backend.backend_target() {
                Ok(BackendTarget::Backend) => {
                    refs.push((RefKind::BackendRef, in_ns(Kind::Backend, &r.namespace, &r.name)))
                }
                Ok(BackendTarget::InferencePool) => refs
                    .push((RefKind::BackendRef, in_ns(Kind::InferencePool, &r.namespace, &r.name))),
                Err(message) => {
                    issues.push(accepted_issue(Reason::InvalidKind, message.clone()));
                    issues.push(refs_issue(Reason::InvalidKind, message));
                }
            }
        }
        Spec::BackendSecurityPolicy(policy) => {
            for (i, t) in policy.target_refs.iter().enumerate() {
                match (t.group.as_str(), t.kind.as_str()) {
                    (AIGATEWAY_GROUP, "AIServiceBackend") => refs.push((
                        RefKind::TargetRef,
                        ObjectKey::new(Kind::AIServiceBackend, ns, &t.name),
                    )),
                    (INFERENCE_GROUP, "InferencePool") => refs.push((
                        RefKind::TargetRef,
                        ObjectKey::new(Kind::InferencePool, ns, &t.name),
                    )),
                    (group, kind) => issues.push(refs_issue(
                        Reason::InvalidKind,
                        format!(
                            "targetRefs[{i}]: {kind}.{group} {:?} is not an AIServiceBackend or \
                             InferencePool",
                            t.name
                        ),
                    )),
                }
            }
            // The Secret is a reference like any other: its changes reach the policy's
            // backends, and through them the ext_proc's runtime config.
            match policy.secret_ref() {
                Ok(secret) => refs.push((
                    RefKind::SecretRef,
                    in_ns(Kind::Secret, &secret.namespace, &secret.name),
                )),
                Err(PolicyError::Invalid(message)) => {
                    issues.push(accepted_issue(Reason::Invalid, message))
                }
                Err(PolicyError::Unsupported(message)) => {
                    issues.push(accepted_issue(Reason::Unsupported, message))
                }
            }
        }
        Spec::BackendTLSPolicy(policy) => {
            if let Err(message) = policy.validate() {
                issues.push(accepted_issue(Reason::Invalid, message));
            }
            for (i, t) in policy.target_refs.iter().enumerate() {
                if (t.group.as_str(), t.kind.as_str()) == (ENVOY_GATEWAY_GROUP, "Backend") {
                    refs.push((RefKind::TargetRef, ObjectKey::new(Kind::Backend, ns, &t.name)));
                } else {
                    issues.push(refs_issue(
                        Reason::InvalidKind,
                        format!(
                            "targetRefs[{i}]: {}.{} {:?} is not a gateway.envoyproxy.io Backend",
                            t.kind, t.group, t.name
                        ),
                    ));
                }
            }
        }
        Spec::QuotaPolicy(policy) => {
            for problem in policy.problems() {
                issues.push(accepted_issue(Reason::UnsupportedValue, problem));
            }
            for (i, t) in policy.target_refs.iter().enumerate() {
                if (t.group.as_str(), t.kind.as_str()) == (AIGATEWAY_GROUP, "AIServiceBackend") {
                    refs.push((
                        RefKind::TargetRef,
                        ObjectKey::new(Kind::AIServiceBackend, ns, &t.name),
                    ));
                } else {
                    issues.push(refs_issue(
                        Reason::InvalidKind,
                        format!(
                            "targetRefs[{i}]: {}.{} {:?} is not an AIServiceBackend",
                            t.kind, t.group, t.name
                        ),
                    ));
                }
            }
        }
        Spec::BackendTrafficPolicy(policy) => {
            for problem in policy.problems() {
                issues.push(accepted_issue(Reason::UnsupportedValue, problem));
            }
            for (i, t) in policy.targets().enumerate() {
                let kinds: &[Kind] = match (t.group.as_str(), t.kind.as_str()) {
                    (GATEWAY_API_GROUP, "Gateway") => &[Kind::Gateway],
                    // Envoy AI Gateway serves an AIGatewayRoute as an HTTPRoute of its name.
                    (GATEWAY_API_GROUP, "HTTPRoute") => &[Kind::HTTPRoute, Kind::AIGatewayRoute],
                    (AIGATEWAY_GROUP, "AIGatewayRoute") => &[Kind::AIGatewayRoute],
                    (group, kind) => {
                        issues.push(refs_issue(
                            Reason::InvalidKind,
                            format!(
                                "targetRefs[{i}]: {kind}.{group} {:?} is not a Gateway, an \
                                 HTTPRoute or an AIGatewayRoute",
                                t.name
                            ),
                        ));
                        continue;
                    }
                };
                for kind in kinds {
                    refs.push((RefKind::TargetRef, ObjectKey::new(*kind, ns, &t.name)));
                }
            }
        }
        Spec::Backend(backend) => {
            if let Err(message) = backend.validate() {
                issues.push(accepted_issue(Reason::Invalid, message));
            }
        }
        Spec::InferencePool(pool) => {
            if let Err(message) = pool.validate() {
                issues.push(accepted_issue(Reason::Invalid, message));
            }
            if let Some(epp) = &pool.endpoint_picker_ref {
                refs.push((
                    RefKind::EndpointPickerRef,
                    ObjectKey::new(Kind::Service, ns, &epp.name),
                ));
            }
        }
        Spec::Gateway(gateway) => {
            if let Err(message) = gateway.validate() {
                issues.push(accepted_issue(Reason::Invalid, message));
            }
            if !gateway.gateway_class_name.is_empty() {
                let class = ObjectKey::new(Kind::GatewayClass, "", &gateway.gateway_class_name);
                refs.push((RefKind::GatewayClassName, class));
            }
            let certificates = gateway.listeners.iter().filter_map(|l| l.tls.as_ref());
            for r in certificates.flat_map(|tls| &tls.certificate_refs) {
                if (r.group.as_deref().unwrap_or(""), r.kind.as_deref().unwrap_or("Secret"))
                    == ("", "Secret")
                {
                    refs.push((
                        RefKind::CertificateRef,
                        in_ns(Kind::Secret, &r.namespace, &r.name),
                    ));
                }
            }
        }
        // Parsing a certificate's key costs; a TLS Secret is judged once, here, for every
        // listener that names it (see `Graph::certificate_problem`).
        Spec::Secret(secret) if secret.type_ == TLS_SECRET_TYPE => {
            if let Some(message) = tls_certificate_problem(secret) {
                issues.push(accepted_issue(Reason::InvalidCertificateRef, message));
            }
        }
        // Likewise a service account key, for every GCPCredentials policy that names it (see
        // `reference_problem`).
        Spec::Secret(secret) if secret.values.contains_key(GCP_SERVICE_ACCOUNT_KEY) => {
            if let Err(message) = gcp_service_account(secret) {
                issues.push(accepted_issue(Reason::InvalidSecret, message));
            }
        }
        Spec::GatewayClass(_)
        | Spec::ReferenceGrant(_)
        | Spec::Secret(_)
        | Spec::Service(_)
        | Spec::Pod(_)
        | Spec::EndpointSlice(_) => {}
    }
    (refs, issues)
}

/// What every route kind declares alike: its hostnames, checked, and its parent Gateways.
fn route_common(object: &Object, refs: &mut Vec<(RefKind, ObjectKey)>, issues: &mut Vec<Issue>) {
    let Some((parent_refs, hostnames)) = object.spec.route() else { return };
    let ns = object.key.namespace.as_str();
    if hostnames.len() > MAX_ROUTE_HOSTNAMES {
        issues.push(accepted_issue(
            Reason::Invalid,
            format!(
                "{} hostnames: Gateway API allows at most {MAX_ROUTE_HOSTNAMES}",
                hostnames.len()
            ),
        ));
    }
    for (i, host) in hostnames.iter().enumerate() {
        if let Err(message) = validate_hostname(host) {
            issues.push(accepted_issue(Reason::Invalid, format!("hostnames[{i}]: {message}")));
        }
    }
    for (i, p) in parent_refs.iter().enumerate() {
        let group = p.group.as_deref().unwrap_or(GATEWAY_API_GROUP);
        let kind = p.kind.as_deref().unwrap_or("Gateway");
        if (group, kind) == (GATEWAY_API_GROUP, "Gateway") {
            let namespace = p.namespace.as_deref().unwrap_or(ns);
            refs.push((RefKind::ParentRef, ObjectKey::new(Kind::Gateway, namespace, &p.name)));
        } else {
            issues.push(refs_issue(
                Reason::InvalidKind,
                format!("parentRefs[{i}]: a route attaches to a Gateway, not {kind}"),
            ));
        }
    }
}

/// The object an HTTPRoute's backendRef names: a Service (Gateway API's default), an
/// InferencePool or an Envoy Gateway Backend; or why it names none of those.
pub fn http_backend_key(
    route: &ObjectKey,
    b: &crate::api::HTTPBackendRef,
) -> Result<ObjectKey, String> {
    let kind = match group_kind(&b.group, &b.kind, "", "Service") {
        ("", "Service") => Kind::Service,
        (INFERENCE_GROUP, "InferencePool") => Kind::InferencePool,
        (ENVOY_GATEWAY_GROUP, "Backend") => Kind::Backend,
        (group, kind) => {
            let group = if group.is_empty() { "core" } else { group };
            return Err(format!(
                "{kind}.{group} {:?} is not a Service, InferencePool or Backend",
                b.name
            ));
        }
    };
    Ok(ObjectKey::new(kind, b.namespace.as_deref().unwrap_or(&route.namespace), &b.name))
}

impl Graph {
    /// Why the Secret `key` cannot serve as a listener's certificate (see
    /// [`crate::api::tls_certificate`]), if it cannot or is not there. A `kubernetes.io/tls`
    /// Secret was judged when it was applied; any other is refused for its type.
    pub fn certificate_problem(&self, key: &ObjectKey) -> Option<String> {
        let Some(node) = self.node(key).filter(|n| n.object.is_some()) else {
            return Some("not found".into());
        };
        match node.object.as_deref().map(|o| &o.spec) {
            Some(Spec::Secret(secret)) if secret.type_ == TLS_SECRET_TYPE => node
                .issues
                .iter()
                .find(|i| i.reason == Reason::InvalidCertificateRef)
                .map(|i| i.message.clone()),
            Some(Spec::Secret(secret)) => tls_certificate_problem(secret),
            _ => Some("is not a Secret".into()),
        }
    }
}

/// Conditions for one node, from its own issues and the state of what it references.
pub(super) fn conditions(graph: &Graph, idx: NodeIndex) -> Vec<Condition> {
    let node = &graph.g[idx];
    let Some(object) = &node.object else { return Vec::new() };
    // A conflict is reported, but the first definition serves: its dependents and neighbours
    // go on as before.
    let conflict = node.conflict.as_ref().map(|message| Condition {
        type_: ConditionType::Accepted,
        status: true,
        reason: Reason::Conflict,
        message: message.clone(),
    });
    if matches!(
        object.key.kind,
        Kind::Secret | Kind::Service | Kind::Pod | Kind::EndpointSlice | Kind::ReferenceGrant
    ) {
        return conflict.into_iter().collect();
    }
    if object.key.kind == Kind::GatewayClass {
        // Another controller's class is not aixds's to speak of.
        if !graph.owns_class(&object.key) {
            return Vec::new();
        }
        let accepted = conflict.unwrap_or_else(|| Condition::ok(ConditionType::Accepted));
        return vec![accepted, Condition::ok(ConditionType::SupportedVersion)];
    }
    let mut accepted = match node.issues.iter().find(|i| i.type_ == ConditionType::Accepted) {
        Some(issue) => {
            Condition::failed(ConditionType::Accepted, issue.reason, issue.message.clone())
        }
        None => conflict.unwrap_or_else(|| Condition::ok(ConditionType::Accepted)),
    };

    let mut problems: Vec<(Reason, String)> = node
        .issues
        .iter()
        .filter(|i| i.type_ == ConditionType::ResolvedRefs)
        .map(|i| (i.reason, i.message.clone()))
        .collect();
    let mut edges: Vec<_> = graph
        .g
        .edges_directed(idx, Direction::Outgoing)
        .filter(|e| *e.weight() != RefKind::Selects)
        .map(|e| (*e.weight(), &graph.g[e.target()]))
        .collect();
    edges.sort_by(|a, b| (a.0, &a.1.key).cmp(&(b.0, &b.1.key)));
    for (kind, target) in edges {
        // A BackendTrafficPolicy's HTTPRoute target is found as an HTTPRoute or an
        // AIGatewayRoute of that name: one of the two is enough, and only the HTTPRoute is
        // reported missing.
        if let Spec::BackendTrafficPolicy(policy) = &object.spec
            && kind == RefKind::TargetRef
            && target.object.is_none()
        {
            let key = &target.key;
            let skip = match key.kind {
                Kind::HTTPRoute => graph
                    .object(&ObjectKey::new(Kind::AIGatewayRoute, &key.namespace, &key.name))
                    .is_some(),
                Kind::AIGatewayRoute => {
                    !policy.targets().any(|t| t.kind == "AIGatewayRoute" && t.name == key.name)
                }
                _ => false,
            };
            if skip {
                continue;
            }
        }
        if let Some(mut problem) = reference_problem(object, kind, target) {
            if target.object.is_none()
                && let Some(why) = graph.kind_missing(target.key.kind)
            {
                problem.1 = format!("{}: {why}", problem.1);
            }
            problems.push(problem);
        }
    }
    if matches!(object.key.kind, Kind::AIServiceBackend | Kind::InferencePool) {
        problems.extend(credential_problems(graph, idx));
    }
    match object.key.kind {
        Kind::Gateway => {
            if !graph.owns_gateway(&object.key) {
                return Vec::new();
            }
            let listeners = listeners::listeners(graph, &object.key);
            let bad: Vec<String> = listeners
                .iter()
                .filter(|l| !l.usable())
                .map(|l| {
                    let why =
                        l.conditions.iter().find(|c| !c.is_good()).map(|c| c.message.as_str());
                    format!("listener {:?}: {}", l.spec.name, why.unwrap_or_default())
                })
                .collect();
            if accepted.is_good() && !bad.is_empty() {
                let none_left = listeners.iter().all(|l| !l.usable());
                accepted = Condition {
                    type_: ConditionType::Accepted,
                    status: !none_left,
                    reason: Reason::ListenersNotValid,
                    message: bad.join("; "),
                };
            }
            for l in &listeners {
                let unresolved = l
                    .conditions
                    .iter()
                    .find(|c| c.type_ == ConditionType::ResolvedRefs && !c.is_good());
                if let Some(c) = unresolved {
                    problems.push((c.reason, format!("listener {:?}: {}", l.spec.name, c.message)));
                }
            }
        }
        Kind::AIGatewayRoute | Kind::HTTPRoute => {
            if object.key.kind == Kind::HTTPRoute {
                problems.extend(unpermitted_backends(graph, idx));
            }
            let parents = node.parents();
            if !parents.is_empty() && parents.iter().all(|p| p.foreign) {
                return Vec::new();
            }
            // Parents that exist and are aixds's: the route is accepted when one takes it.
            let judged: Vec<_> = parents
                .iter()
                .filter(|p| !p.foreign && graph.object(&p.gateway).is_some())
                .collect();
            let refused: Vec<String> = judged
                .iter()
                .filter_map(|p| {
                    p.refused.as_ref().map(|(_, m)| format!("parentRefs[{}]: {m}", p.index))
                })
                .collect();
            if accepted.is_good() && !refused.is_empty() {
                if judged.iter().all(|p| p.attached.is_empty()) {
                    let reason = judged.iter().find_map(|p| p.refused.as_ref()).map(|r| r.0);
                    accepted = Condition::failed(
                        ConditionType::Accepted,
                        reason.unwrap_or(Reason::NoMatchingParent),
                        refused.join("; "),
                    );
                } else {
                    accepted.message = refused.join("; ");
                }
            }
        }
        _ => {}
    }
    let resolved = match problems.first() {
        None => Condition::ok(ConditionType::ResolvedRefs),
        Some((reason, _)) => {
            let message: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
            Condition::failed(ConditionType::ResolvedRefs, *reason, message.join("; "))
        }
    };
    vec![accepted, resolved]
}

/// An HTTPRoute's backendRefs into other namespaces that no ReferenceGrant there permits.
fn unpermitted_backends(graph: &Graph, idx: NodeIndex) -> Vec<(Reason, String)> {
    let from = &graph.g[idx].key;
    let mut out: Vec<(Reason, String)> = graph
        .g
        .edges_directed(idx, Direction::Outgoing)
        .filter(|e| *e.weight() == RefKind::BackendRef)
        .map(|e| &graph.g[e.target()].key)
        .filter(|to| !graph.reference_permitted(from, to))
        .map(|to| {
            (
                Reason::RefNotPermitted,
                format!(
                    "{} {}/{} is in another namespace and no ReferenceGrant there allows it",
                    to.kind, to.namespace, to.name
                ),
            )
        })
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out.dedup();
    out
}

/// Why the BackendSecurityPolicies targeting a backend give it no credential, each named: a
/// backend that should carry a credential and cannot is not served.
pub(super) fn credential_problems(graph: &Graph, backend: NodeIndex) -> Vec<(Reason, String)> {
    let mut policies: Vec<NodeIndex> = graph
        .g
        .edges_directed(backend, Direction::Incoming)
        .filter(|e| *e.weight() == RefKind::TargetRef)
        .map(|e| e.source())
        .filter(|p| graph.g[*p].key.kind == Kind::BackendSecurityPolicy)
        .collect();
    policies.sort_by(|a, b| graph.g[*a].key.cmp(&graph.g[*b].key));
    policies
        .into_iter()
        .filter_map(|p| {
            let (reason, message) = policy_problem(graph, p)?;
            let key = &graph.g[p].key;
            Some((reason, format!("{} {}/{}: {message}", key.kind, key.namespace, key.name)))
        })
        .collect()
}

/// Why the BackendSecurityPolicy at `idx` gives no credential, if it gives none. Read from the
/// policy and its Secret rather than from the policy's conditions, which may not be recomputed
/// yet in this batch.
pub(super) fn policy_problem(graph: &Graph, idx: NodeIndex) -> Option<(Reason, String)> {
    let node = &graph.g[idx];
    let object = node.object.as_ref()?;
    if let Some(issue) = node.issues.iter().find(|i| i.type_ == ConditionType::Accepted) {
        return Some((Reason::InvalidPolicy, issue.message.clone()));
    }
    graph
        .g
        .edges_directed(idx, Direction::Outgoing)
        .filter(|e| *e.weight() == RefKind::SecretRef)
        .find_map(|e| reference_problem(object, RefKind::SecretRef, &graph.g[e.target()]))
}

fn reference_problem(
    referrer: &Object,
    kind: RefKind,
    target: &super::Node,
) -> Option<(Reason, String)> {
    let key = &target.key;
    let Some(found) = &target.object else {
        let reason = match kind {
            RefKind::ParentRef => Reason::NoMatchingParent,
            RefKind::BackendRef => Reason::BackendNotFound,
            RefKind::TargetRef => Reason::TargetNotFound,
            RefKind::SecretRef => Reason::SecretNotFound,
            RefKind::EndpointPickerRef => Reason::InvalidExtensionRef,
            // Whose a Gateway is and its listeners' certificates are judged with the listeners.
            RefKind::Selects | RefKind::GatewayClassName | RefKind::CertificateRef => return None,
        };
        let what = if kind == RefKind::EndpointPickerRef { "endpoint picker " } else { "" };
        return Some((
            reason,
            format!("{what}{} {}/{} not found", key.kind, key.namespace, key.name),
        ));
    };
    match (&referrer.spec, &found.spec) {
        // A route relies on its AIServiceBackends resolving in turn.
        (Spec::AIGatewayRoute(_), _) if key.kind == Kind::AIServiceBackend => {
            let failed = target.conditions.iter().find(|c| !c.is_good())?;
            Some((
                Reason::BackendNotResolved,
                format!("{} {}/{}: {}", key.kind, key.namespace, key.name, failed.message),
            ))
        }
        (Spec::BackendSecurityPolicy(policy), Spec::Secret(secret)) => {
            // A service account key was judged when its Secret was applied: parsing an RSA key
            // costs, and every backend a policy targets asks, every batch.
            let judged = policy.policy_type == SecurityPolicyType::GCPCredentials
                && secret.type_ != TLS_SECRET_TYPE
                && secret.values.contains_key(GCP_SERVICE_ACCOUNT_KEY);
            let problem = match judged {
                true => target
                    .issues
                    .iter()
                    .find(|i| i.reason == Reason::InvalidSecret)
                    .map(|i| i.message.clone()),
                false => policy.secret_problem(secret),
            }?;
            Some((
                Reason::InvalidSecret,
                format!("Secret {}/{} {problem}", key.namespace, key.name),
            ))
        }
        (Spec::HTTPRoute(route), Spec::Service(service)) => {
            let ports = route
                .rules
                .iter()
                .flat_map(|r| &r.backend_refs)
                .filter(|b| b.name == key.name && b.group.as_deref().unwrap_or("").is_empty())
                .filter(|b| {
                    b.namespace.as_deref().unwrap_or(&referrer.key.namespace) == key.namespace
                })
                .filter_map(|b| b.port);
            let missing: Vec<u16> =
                ports.filter(|p| !service.ports.iter().any(|sp| sp.port == *p)).collect();
            missing.first().map(|port| {
                (
                    Reason::BackendNotFound,
                    format!("Service {}/{} has no port {port}", key.namespace, key.name),
                )
            })
        }
        (Spec::InferencePool(pool), Spec::Service(service)) => {
            let port = pool.endpoint_picker_ref.as_ref()?.port.as_ref()?.number;
            (!service.ports.iter().any(|p| p.port == port)).then(|| {
                (
                    Reason::InvalidExtensionRef,
                    format!(
                        "endpoint picker Service {}/{} has no port {port}",
                        key.namespace, key.name
                    ),
                )
            })
        }
        _ => None,
    }
}
