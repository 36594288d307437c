//! Gateway listeners and the routes attached to them, as Gateway API defines them.
//!
//! Takes: the graph. Gives: per Gateway the state of each listener ([`listeners`]): its
//! `Accepted`, `ResolvedRefs` and `Conflicted` conditions, the route kinds it takes and, for
//! HTTPS, its certificates; and per route where it attaches ([`route_parents`]): which listeners
//! of which Gateways, under which hostnames, or why a parent refused it. The compiler, the
//! graph's own conditions, the status writer and `explain` all read these, so they agree.
//!
//! A listener that cannot be served (unsupported protocol or TLS mode, a certificate that is
//! missing, malformed or in another namespace without a ReferenceGrant, a conflict with an
//! earlier listener on its port) is left out; the Gateway's other listeners serve. Conflicts are
//! judged within one Gateway, first listener first: HTTP and HTTPS on one port, or two listeners
//! of one protocol on one port with the same hostname.

use std::collections::HashMap;

use super::{Condition, ConditionType, Graph, Reason};
use crate::api::{
    AIGATEWAY_GROUP, GATEWAY_API_GROUP, Kind, Listener, ObjectKey, Spec, hostname_intersection,
    validate_hostname,
};

/// The route kinds a listener can take, both by default.
const ROUTE_KINDS: [(&str, &str); 2] =
    [(AIGATEWAY_GROUP, "AIGatewayRoute"), (GATEWAY_API_GROUP, "HTTPRoute")];

/// One listener of a Gateway, judged.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerState<'a> {
    pub spec: &'a Listener,
    /// `Accepted`, `ResolvedRefs` and `Conflicted`, in that order.
    pub conditions: Vec<Condition>,
    /// The route kinds it takes, as (group, kind): `supportedKinds` in its status.
    pub kinds: Vec<(&'static str, &'static str)>,
    /// For HTTPS, the Secrets holding its certificates, in the order it names them.
    pub certificates: Vec<ObjectKey>,
}

impl ListenerState<'_> {
    /// Whether Envoy serves it.
    pub fn usable(&self) -> bool {
        self.conditions.iter().all(Condition::is_good)
    }

    pub fn https(&self) -> bool {
        self.spec.protocol == "HTTPS"
    }
}

/// The listeners of `gateway`, in its order; empty when there is no such Gateway.
pub fn listeners<'a>(graph: &'a Graph, gateway: &ObjectKey) -> Vec<ListenerState<'a>> {
    let Some(object) = graph.object(gateway) else { return Vec::new() };
    let Spec::Gateway(spec) = &object.spec else { return Vec::new() };
    let mut out: Vec<ListenerState<'a>> = Vec::with_capacity(spec.listeners.len());
    for l in &spec.listeners {
        let mut state = judge(graph, gateway, l);
        let conflict = out.iter().filter(|o| o.spec.port == l.port).find_map(|o| {
            if o.spec.protocol != l.protocol {
                Some((
                    Reason::ProtocolConflict,
                    format!(
                        "listener {:?} serves {} on port {}",
                        o.spec.name, o.spec.protocol, l.port
                    ),
                ))
            } else if o.spec.hostname == l.hostname {
                Some((
                    Reason::HostnameConflict,
                    format!("listener {:?} has the same port and hostname", o.spec.name),
                ))
            } else {
                None
            }
        });
        if let Some((reason, message)) = conflict {
            state.conditions[2] = Condition::failed(ConditionType::Conflicted, reason, message);
        }
        out.push(state);
    }
    out
}

/// One listener on its own: protocol, hostname, allowed routes, TLS.
fn judge<'a>(graph: &Graph, gateway: &ObjectKey, l: &'a Listener) -> ListenerState<'a> {
    let mut accepted = Condition::ok(ConditionType::Accepted);
    let mut resolved = Condition::ok(ConditionType::ResolvedRefs);
    let mut refuse = |reason, message: String| {
        if accepted.is_good() {
            accepted = Condition::failed(ConditionType::Accepted, reason, message);
        }
    };
    if !matches!(l.protocol.as_str(), "HTTP" | "HTTPS") {
        refuse(
            Reason::UnsupportedProtocol,
            format!("protocol {} is not supported: aixds serves HTTP and HTTPS", l.protocol),
        );
    }
    if let Some(Err(message)) = l.hostname.as_deref().map(validate_hostname) {
        refuse(Reason::UnsupportedValue, message);
    }
    let allowed = l.allowed_routes.as_ref();
    match allowed.and_then(|a| a.namespaces.as_ref()).and_then(|n| n.from.as_deref()) {
        None | Some("Same" | "All") => {}
        Some(other) => refuse(
            Reason::UnsupportedValue,
            format!("allowedRoutes.namespaces.from {other:?} is not supported: use Same or All"),
        ),
    }
    let asked = allowed.map(|a| a.kinds.as_slice()).unwrap_or_default();
    let kinds: Vec<(&'static str, &'static str)> = if asked.is_empty() {
        ROUTE_KINDS.to_vec()
    } else {
        ROUTE_KINDS
            .into_iter()
            .filter(|(group, kind)| {
                asked.iter().any(|k| {
                    k.group.as_deref().unwrap_or(GATEWAY_API_GROUP) == *group && k.kind == *kind
                })
            })
            .collect()
    };
    if kinds.len() < asked.len() {
        let names: Vec<&str> = asked
            .iter()
            .filter(|k| !ROUTE_KINDS.iter().any(|(_, kind)| *kind == k.kind))
            .map(|k| k.kind.as_str())
            .collect();
        resolved = Condition::failed(
            ConditionType::ResolvedRefs,
            Reason::InvalidRouteKinds,
            format!("route kinds {names:?} are not supported"),
        );
    }
    let mut certificates = Vec::new();
    if l.protocol == "HTTPS" {
        match tls_certificates(graph, gateway, l) {
            Ok(secrets) => certificates = secrets,
            Err((Reason::UnsupportedValue, message)) => refuse(Reason::UnsupportedValue, message),
            Err((reason, message)) => {
                if resolved.is_good() {
                    resolved = Condition::failed(ConditionType::ResolvedRefs, reason, message);
                }
            }
        }
    }
    ListenerState {
        spec: l,
        conditions: vec![accepted, resolved, Condition::ok(ConditionType::Conflicted)],
        kinds,
        certificates,
    }
}

/// The Secrets an HTTPS listener's certificates are in, or why it has none it can use.
fn tls_certificates(
    graph: &Graph,
    gateway: &ObjectKey,
    l: &Listener,
) -> Result<Vec<ObjectKey>, (Reason, String)> {
    let Some(tls) = &l.tls else {
        return Err((
            Reason::InvalidCertificateRef,
            "an HTTPS listener needs tls.certificateRefs".into(),
        ));
    };
    if let Some(mode) = tls.mode.as_deref().filter(|m| *m != "Terminate") {
        return Err((
            Reason::UnsupportedValue,
            format!("tls.mode {mode} is not supported on HTTPS: aixds terminates TLS"),
        ));
    }
    if tls.certificate_refs.is_empty() {
        return Err((Reason::InvalidCertificateRef, "tls.certificateRefs is empty".into()));
    }
    let mut secrets = Vec::new();
    for (i, r) in tls.certificate_refs.iter().enumerate() {
        let (group, kind) =
            (r.group.as_deref().unwrap_or(""), r.kind.as_deref().unwrap_or("Secret"));
        if (group, kind) != ("", "Secret") {
            return Err((
                Reason::InvalidCertificateRef,
                format!("tls.certificateRefs[{i}]: {kind}.{group} is not a core Secret"),
            ));
        }
        let key = ObjectKey::new(
            Kind::Secret,
            r.namespace.as_deref().unwrap_or(&gateway.namespace),
            &r.name,
        );
        if key.namespace != gateway.namespace && !graph.reference_permitted(gateway, &key) {
            return Err((
                Reason::RefNotPermitted,
                format!(
                    "tls.certificateRefs[{i}]: Secret {}/{} is in another namespace and no \
                     ReferenceGrant there allows it",
                    key.namespace, key.name
                ),
            ));
        }
        if let Some(problem) = graph.certificate_problem(&key) {
            return Err((
                Reason::InvalidCertificateRef,
                format!(
                    "tls.certificateRefs[{i}]: Secret {}/{} {problem}",
                    key.namespace, key.name
                ),
            ));
        }
        secrets.push(key);
    }
    Ok(secrets)
}

/// A listener as it shares its port with those of other Gateways.
#[derive(Debug, Clone, Copy)]
pub struct PortShare<'a> {
    /// `None` for the default listener, which no Gateway declares.
    pub gateway: Option<&'a ObjectKey>,
    pub name: &'a str,
    pub https: bool,
    pub hostname: Option<&'a str>,
}

/// Why `l` cannot be served on its port after `earlier` (the listeners already there, of
/// Gateways before its own in key order): Envoy serves one protocol per port, and for HTTPS one
/// filter chain per server name. Conflicts within one Gateway are judged by [`listeners`].
pub fn shared_port_conflict(earlier: &[PortShare], l: &PortShare) -> Option<(Reason, String)> {
    let who = |o: &PortShare| match o.gateway {
        Some(g) => format!("listener {:?} of Gateway {}/{}", o.name, g.namespace, g.name),
        None => "the default listener".to_string(),
    };
    let first = earlier.first()?;
    if first.https != l.https {
        let protocol = if first.https { "HTTPS" } else { "HTTP" };
        return Some((
            Reason::ProtocolConflict,
            format!("{} serves {protocol} on its port", who(first)),
        ));
    }
    let same = earlier.iter().find(|o| l.https && o.hostname == l.hostname)?;
    Some((
        Reason::HostnameConflict,
        format!("{} serves HTTPS for the same hostname on its port", who(same)),
    ))
}

/// The listeners of aixds's accepted Gateways that a listener of an earlier Gateway keeps off
/// their port (see [`shared_port_conflict`]), by (Gateway, listener name), with why.
pub fn port_conflicts(graph: &Graph) -> HashMap<(ObjectKey, String), (Reason, String)> {
    let gateways: Vec<&ObjectKey> = graph
        .objects()
        .map(|o| &o.key)
        .filter(|k| k.kind == Kind::Gateway && graph.owns_gateway(k))
        .filter(|k| graph.node(k).is_some_and(|n| n.accepted()))
        .collect();
    let mut on_port: HashMap<u16, Vec<PortShare>> = HashMap::new();
    let mut out = HashMap::new();
    let all: Vec<(&ObjectKey, ListenerState)> = gateways
        .iter()
        .flat_map(|g| listeners(graph, g).into_iter().filter(|l| l.usable()).map(move |l| (*g, l)))
        .collect();
    for (gateway, l) in &all {
        let share = PortShare {
            gateway: Some(gateway),
            name: &l.spec.name,
            https: l.https(),
            hostname: l.spec.hostname.as_deref(),
        };
        let earlier = on_port.entry(l.spec.port).or_default();
        match shared_port_conflict(earlier, &share) {
            Some(why) => {
                out.insert(((*gateway).clone(), l.spec.name.clone()), why);
            }
            None => earlier.push(share),
        }
    }
    out
}

/// Where one listener takes a route, and under which hostnames (`*` for any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub gateway: ObjectKey,
    pub listener: String,
    pub port: u16,
    pub hostnames: Vec<String>,
}

/// What one parentRef of a route came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentState {
    /// Index in `parentRefs`.
    pub index: usize,
    pub gateway: ObjectKey,
    /// The Gateway is another controller's: nothing is said or served for it.
    pub foreign: bool,
    pub attached: Vec<Attachment>,
    /// Why no listener took the route, when none did.
    pub refused: Option<(Reason, String)>,
}

/// The parents of a route (AIGatewayRoute or HTTPRoute) that name Gateways, in its order.
pub fn route_parents(graph: &Graph, route: &ObjectKey) -> Vec<ParentState> {
    let Some((parent_refs, route_hostnames)) = graph.object(route).and_then(|o| o.spec.route())
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (index, p) in parent_refs.iter().enumerate() {
        let group = p.group.as_deref().unwrap_or(GATEWAY_API_GROUP);
        if (group, p.kind.as_deref().unwrap_or("Gateway")) != (GATEWAY_API_GROUP, "Gateway") {
            continue;
        }
        let gateway = ObjectKey::new(
            Kind::Gateway,
            p.namespace.as_deref().unwrap_or(&route.namespace),
            &p.name,
        );
        let mut state = ParentState {
            index,
            foreign: graph.object(&gateway).is_some() && !graph.owns_gateway(&gateway),
            gateway,
            attached: Vec::new(),
            refused: None,
        };
        if !state.foreign {
            match attach(
                graph,
                route,
                route_hostnames,
                &state.gateway,
                p.section_name.as_deref(),
                p.port,
            ) {
                Ok(attached) => state.attached = attached,
                Err(refused) => state.refused = Some(refused),
            }
        }
        out.push(state);
    }
    out
}

/// The listeners of `gateway` that take the route, or why none does.
fn attach(
    graph: &Graph,
    route: &ObjectKey,
    route_hostnames: &[String],
    gateway: &ObjectKey,
    section: Option<&str>,
    port: Option<i32>,
) -> Result<Vec<Attachment>, (Reason, String)> {
    let what = format!("Gateway {}/{}", gateway.namespace, gateway.name);
    if graph.object(gateway).is_none() {
        return Err((Reason::NoMatchingParent, format!("{what} not found")));
    }
    if !graph.node(gateway).is_some_and(|n| n.accepted()) {
        return Err((Reason::NoMatchingParent, format!("{what} is not accepted")));
    }
    let named: Vec<ListenerState> = listeners(graph, gateway)
        .into_iter()
        .filter(|l| section.is_none_or(|s| s == l.spec.name))
        .filter(|l| port.is_none_or(|p| p == i32::from(l.spec.port)))
        .collect();
    if named.is_empty() {
        let which = match (section, port) {
            (Some(s), Some(p)) => format!("named {s:?} on port {p}"),
            (Some(s), None) => format!("named {s:?}"),
            (None, Some(p)) => format!("on port {p}"),
            (None, None) => "at all".into(),
        };
        return Err((Reason::NoMatchingParent, format!("{what} has no listener {which}")));
    }
    let usable: Vec<&ListenerState> = named.iter().filter(|l| l.usable()).collect();
    if usable.is_empty() {
        return Err((
            Reason::NoMatchingParent,
            format!("{what}: no listener it names can be served"),
        ));
    }
    // Envoy AI Gateway's Gateways allow HTTPRoutes, into which it turns AIGatewayRoutes: a
    // listener that takes HTTPRoutes takes AIGatewayRoutes too, so that their YAML works as is.
    let kind = (route.kind.group(), route.kind.as_str());
    let allowed: Vec<&&ListenerState> = usable
        .iter()
        .filter(|l| {
            l.kinds.contains(&kind) || (route.kind == Kind::AIGatewayRoute && !l.kinds.is_empty())
        })
        .filter(|l| {
            let from = l
                .spec
                .allowed_routes
                .as_ref()
                .and_then(|a| a.namespaces.as_ref())
                .and_then(|n| n.from.as_deref());
            from == Some("All") || route.namespace == gateway.namespace
        })
        .collect();
    if allowed.is_empty() {
        return Err((
            Reason::NotAllowedByListeners,
            format!(
                "{what}: no listener allows {}s from namespace {:?}",
                route.kind, route.namespace
            ),
        ));
    }
    let attached: Vec<Attachment> = allowed
        .iter()
        .filter_map(|l| {
            let hostnames = hostnames(l.spec.hostname.as_deref(), route_hostnames)?;
            Some(Attachment {
                gateway: gateway.clone(),
                listener: l.spec.name.clone(),
                port: l.spec.port,
                hostnames,
            })
        })
        .collect();
    if attached.is_empty() {
        return Err((
            Reason::NoMatchingListenerHostname,
            format!(
                "{what}: no listener's hostname matches the route's hostnames {route_hostnames:?}"
            ),
        ));
    }
    Ok(attached)
}

/// The hostnames a route serves on a listener: where the listener's hostname (none: any) meets
/// the route's (none: any), `*` when both take any; `None` when they do not meet.
pub fn hostnames(listener: Option<&str>, route: &[String]) -> Option<Vec<String>> {
    let mut out: Vec<String> = match (listener, route.is_empty()) {
        (None, true) => vec!["*".into()],
        (Some(l), true) => vec![l.to_string()],
        (None, false) => route.to_vec(),
        (Some(l), false) => {
            route.iter().filter_map(|r| hostname_intersection(l, r)).map(str::to_string).collect()
        }
    };
    out.sort();
    out.dedup();
    (!out.is_empty()).then_some(out)
}
