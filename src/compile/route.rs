//! RouteConfigurations: the model routing of the AIGatewayRoutes attached to one port, split
//! into routing scopes so that a change to one model's routes sends that model's routes alone.
//!
//! Takes: one AIGatewayRoute and the graph's view of its backends. Gives: a [`Fragment`] with its
//! Envoy routes, and per port the RouteConfigurations assembled from the fragments attached
//! there, in route key order, ending in catch-alls that answer 404 in the client's error format
//! (Anthropic's on its endpoints, OpenAI's elsewhere).
//!
//! Scopes (Envoy's scoped routes; the listener builds the key from the port and the scope
//! header, see `listener.rs`):
//! - every model some accepted route names exactly (`x-ai-eg-model`, type `Exact`: the models
//!   the router phase lists) has a scope on every port, `route-{port}/model/{model}`, whose key
//!   is the port and [`model_scope`]. Its RouteConfiguration, inline, holds the routes that name
//!   that model and the routes that name no model exactly, in their usual order, up to the first
//!   route that matches on the model alone (nothing after it is reachable in the scope: in the
//!   usual configuration, a rule per model, the scope holds that rule alone). On a port where no
//!   route names the model, the scope names the default RouteConfiguration instead;
//! - the default scope, `route-{port}` (key: the port and [`DEFAULT_SCOPE`]), routes by the
//!   RouteConfiguration `route-{port}`, fetched by name: the routes that name no model exactly,
//!   HTTPRoutes' included. Every request starts there; the router phase moves it to its model's
//!   scope when a route names the model exactly.
//!
//! A route that names no model exactly is in every scope where it comes before the model's own
//! routes, since it may match any model: a change to one of those re-sends every scope of the
//! port. A rule naming two models (two exact matches) is in both scopes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, data_source, header_value_option,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, RetryPolicy, Route, RouteAction, RouteConfiguration,
    RouteMatch, ScopedRouteConfiguration, VirtualHost, WeightedCluster, header_matcher,
    retry_policy, route, route_action, route_match, scoped_route_configuration, weighted_cluster,
};
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration, UInt32Value};
use envoy_types::util::pack_any;

use super::{cluster, extproc, http_route, listener, picker, ratelimit};
use crate::api::{
    AIGATEWAY_GROUP, AIGatewayRouteSpec, HeaderMatchType, INFERENCE_GROUP, Kind, MODEL_HEADER,
    ObjectKey, RouteMatch as AIRouteMatch, RouteRule, Spec, group_kind,
};
use crate::graph::Graph;
use crate::graph::listeners;
use crate::wire::{
    DEFAULT_SCOPE, NOT_FOUND_ANTHROPIC_BODY, NOT_FOUND_BODY, NOT_FOUND_COHERE_BODY,
    ROUTE_BACKEND_HEADER, SCOPE_HEADER, SCOPE_PORT_HEADER, model_scope, route_backend_id,
};
use crate::xds::Resource;
use prost::{Message, Name};

/// How long a rule without `timeouts.request` (or with one that does not parse) gives a
/// response, a stream included, to complete: Envoy's own default, 15 s, cuts long answers.
pub(super) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration { seconds: 60, nanos: 0 };

/// Gateway API's largest backendRef weight. Envoy rejects weights that sum past `u32::MAX`, which
/// weights within this bound cannot reach with any realistic number of backends.
const MAX_WEIGHT: u32 = 1_000_000;

/// One AIGatewayRoute, compiled.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Fragment {
    /// The listener ports it attaches to, each with the hostnames it serves there (`*`: any).
    pub attachments: BTreeMap<u16, BTreeSet<String>>,
    /// Empty when the route is not accepted or none of its rules has a usable backend.
    pub routes: Vec<Route>,
    /// The models its rules name exactly (accepted routes only): each has a scope.
    pub models: BTreeSet<String>,
    /// Its routes that name no model exactly, encoded as entries of a VirtualHost's `routes`
    /// field, so that assembling a RouteConfiguration of many routes concatenates bytes instead
    /// of cloning and re-encoding every route.
    pub general: Vec<u8>,
    /// Per model with routes here: those routes and the general ones, in their order, encoded
    /// the same way, up to the first route that takes every request for the model (one that
    /// matches on the model alone): none after it can match in that model's scope. A model
    /// without an entry gets `general` alone.
    pub scoped: BTreeMap<String, Vec<u8>>,
    /// The models `scoped` has such a route for: in their scopes nothing after this route's
    /// routes is reachable, other routes' and the 404s included.
    pub terminal: BTreeSet<String>,
    /// Every InferencePool its backendRefs name, usable or not: their clusters exist because of
    /// routes like this one.
    pub pools: BTreeSet<ObjectKey>,
    /// The fallback clusters of its rules whose backendRefs have several priorities.
    pub clusters: Vec<Resource>,
    /// For an HTTPRoute: its routes, each encoded apart with its precedence, as they are
    /// ordered among all HTTPRoutes' routes on a host (see `http_route.rs`).
    pub ranked: Vec<(http_route::Precedence, Vec<u8>)>,
    /// For an HTTPRoute: the Services, InferencePools and Backends it names.
    pub targets: BTreeSet<ObjectKey>,
}

impl Fragment {
    pub fn serves(&self) -> bool {
        !self.routes.is_empty() || !self.ranked.is_empty()
    }

    /// Whether the default scope and every scope of its ports take the same from `other` as
    /// from it: whether it serves, where, and its general routes.
    pub fn same_general(&self, other: &Fragment) -> bool {
        (self.serves(), &self.general, &self.attachments, &self.ranked)
            == (other.serves(), &other.general, &other.attachments, &other.ranked)
    }

    /// Its routes in `scope`, encoded.
    fn bytes(&self, scope: Scope<'_>) -> &[u8] {
        match scope {
            Scope::Default => &self.general,
            Scope::Model(model) => self.scoped.get(model).unwrap_or(&self.general),
        }
    }
}

/// Which routes of a port a RouteConfiguration holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope<'a> {
    /// Those that name no model exactly.
    Default,
    /// Those that name this model, and those that name no model exactly.
    Model(&'a str),
}

/// The name of the default scope of `port` and of the RouteConfiguration it names, which the
/// scopes of models without routes on the port name too.
pub(super) fn config_name(port: u16) -> String {
    format!("route-{port}")
}

/// The name of `scope` on `port`, and of the RouteConfiguration of that scope's own.
pub(super) fn scope_name(port: u16, scope: Scope<'_>) -> String {
    match scope {
        Scope::Default => config_name(port),
        Scope::Model(model) => format!("{}{model}", model_scope_prefix(port)),
    }
}

/// The prefix of the names of the model scopes of `port`.
pub(super) fn model_scope_prefix(port: u16) -> String {
    format!("route-{port}/model/")
}

/// A RouteConfiguration, encoded, and the routes it holds routes of.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Assembled {
    config: Vec<u8>,
    sources: Vec<ObjectKey>,
}

impl Assembled {
    /// As a resource of its own, fetched by name (the default scope's).
    pub(super) fn resource(&self, name: String) -> Resource {
        let type_url = RouteConfiguration::type_url();
        super::resource_from_bytes(name, type_url, self.config.clone(), self.sources.clone())
    }
}

/// What a scope routes by.
pub(super) enum ScopeRoutes<'a> {
    /// Its own routes, inline: one resource, so that a new model's scope is routable as soon as
    /// Envoy has it (a RouteConfiguration fetched by name would take Envoy another request).
    Inline(&'a Assembled),
    /// The port's default RouteConfiguration, by name: shared by the default scope and by every
    /// model without routes on the port, which Envoy then holds once.
    Default,
}

/// The ScopedRouteConfiguration of `scope` on `port`.
pub(super) fn scope_resource(port: u16, scope: Scope<'_>, routes: ScopeRoutes<'_>) -> Resource {
    use scoped_route_configuration::key::{Fragment as KeyFragment, fragment};
    let name = scope_name(port, scope);
    let value = match scope {
        Scope::Default => DEFAULT_SCOPE.to_string(),
        Scope::Model(model) => model_scope(model),
    };
    let string = |s: String| KeyFragment { r#type: Some(fragment::Type::StringKey(s)) };
    let head = ScopedRouteConfiguration {
        name: name.clone(),
        key: Some(scoped_route_configuration::Key {
            fragments: vec![string(port.to_string()), string(value)],
        }),
        route_configuration_name: match routes {
            ScopeRoutes::Inline(_) => String::new(),
            ScopeRoutes::Default => config_name(port),
        },
        ..Default::default()
    };
    let mut scoped = head.encode_to_vec();
    let type_url = ScopedRouteConfiguration::type_url();
    match routes {
        ScopeRoutes::Inline(routes) => {
            // ScopedRouteConfiguration.route_configuration is field 5.
            super::canonical::append_field(&mut scoped, 5, &routes.config);
            super::resource_from_bytes(name, type_url, scoped, routes.sources.clone())
        }
        ScopeRoutes::Default => super::resource_from_bytes(name, type_url, scoped, Vec::new()),
    }
}

pub(super) fn fragment(
    graph: &Graph,
    key: &ObjectKey,
    ports: &BTreeMap<u16, Vec<listener::Served>>,
) -> Fragment {
    let accepted = graph.node(key).is_some_and(|n| n.accepted());
    let spec = match graph.object(key).map(|o| &o.spec) {
        Some(Spec::AIGatewayRoute(spec)) => spec,
        Some(Spec::HTTPRoute(spec)) => {
            let ranked = if accepted { http_route::compile(graph, key, spec) } else { Vec::new() };
            return Fragment {
                attachments: attachments(graph, key, ports),
                ranked,
                targets: http_route::targets(key, spec),
                ..Default::default()
            };
        }
        _ => return Fragment::default(),
    };
    let models = match accepted {
        true => spec.rules.iter().flat_map(|r| &r.matches).flat_map(exact_models).collect(),
        false => BTreeSet::new(),
    };
    let pools = spec
        .rules
        .iter()
        .flat_map(|r| &r.backend_refs)
        .filter_map(|b| match backend_key(key, b) {
            Some(k) if k.kind == Kind::InferencePool => Some(k),
            _ => None,
        })
        .collect();
    let (compiled, clusters) =
        if accepted { compile_rules(graph, key, spec) } else { Default::default() };
    let mut general = Vec::new();
    let mut scoped: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut terminal: BTreeSet<String> = BTreeSet::new();
    for (route, named) in &compiled {
        let bytes = encode_route(route);
        if named.is_empty() {
            general.extend_from_slice(&bytes);
            for (model, encoded) in scoped.iter_mut() {
                if !terminal.contains(model) {
                    encoded.extend_from_slice(&bytes);
                }
            }
            continue;
        }
        for model in named {
            if terminal.contains(model) {
                continue;
            }
            // A model's scope starts with the general routes before its first route.
            let encoded = scoped.entry(model.clone()).or_insert_with(|| general.clone());
            encoded.extend_from_slice(&bytes);
            if takes_every_request(route, model) {
                terminal.insert(model.clone());
            }
        }
    }
    Fragment {
        attachments: attachments(graph, key, ports),
        routes: compiled.into_iter().map(|(route, _)| route).collect(),
        models,
        general,
        scoped,
        terminal,
        pools,
        clusters,
        ..Default::default()
    }
}

/// Whether `route` matches every request whose model header is `model`: its only conditions are
/// that header, exactly (the path is always a prefix `/`).
fn takes_every_request(route: &Route, model: &str) -> bool {
    let Some(m) = &route.r#match else { return false };
    let path_any =
        matches!(&m.path_specifier, Some(route_match::PathSpecifier::Prefix(p)) if p == "/");
    let only_model = m.headers.iter().all(|h| {
        h.name.eq_ignore_ascii_case(MODEL_HEADER)
            && !h.invert_match
            && matches!(
                &h.header_match_specifier,
                Some(header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact(v)),
                    ignore_case: false,
                    ..
                })) if v == model
            )
    });
    path_any
        && only_model
        && m.query_parameters.is_empty()
        && m.dynamic_metadata.is_empty()
        && m.runtime_fraction.is_none()
        && m.grpc.is_none()
        && m.tls_context.is_none()
}

/// The models a match names exactly: the request's model header must equal each.
fn exact_models(m: &AIRouteMatch) -> impl Iterator<Item = String> + '_ {
    m.headers
        .iter()
        .filter(|h| {
            h.match_type == HeaderMatchType::Exact && h.name.eq_ignore_ascii_case(MODEL_HEADER)
        })
        .map(|h| h.value.clone())
}

/// `route` as an entry of a VirtualHost's `routes` field, its `typed_per_filter_config` written
/// with its keys sorted: prost writes a map in random order, which would give the same route new
/// bytes (and the RouteConfiguration a new version) on every compile.
fn encode_route(route: &Route) -> Vec<u8> {
    let mut route = route.clone();
    let filters = std::mem::take(&mut route.typed_per_filter_config);
    let mut bytes = route.encode_to_vec();
    // Route.typed_per_filter_config is field 13.
    super::canonical::append_map(
        &mut bytes,
        13,
        filters.into_iter().map(|(k, v)| (k, v.encode_to_vec())),
    );
    let mut out = Vec::new();
    // VirtualHost.routes is field 3.
    super::canonical::append_field(&mut out, 3, &bytes);
    out
}

/// Where the route attaches: on each port, the hostnames it serves there. A route with
/// parentRefs attaches to the listeners of its Gateways that take it (see
/// `graph::listeners::route_parents`, kept with the route's node); one without attaches to every
/// listener served.
pub(super) fn attachments(
    graph: &Graph,
    key: &ObjectKey,
    ports: &BTreeMap<u16, Vec<listener::Served>>,
) -> BTreeMap<u16, BTreeSet<String>> {
    let Some(object) = graph.object(key) else { return BTreeMap::new() };
    let Some((parent_refs, hostnames)) = object.spec.route() else { return BTreeMap::new() };
    let mut out: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
    // An AIGatewayRoute without parents is aixds's way to serve every listener; Gateway API
    // gives an HTTPRoute without parents none.
    if parent_refs.is_empty() && key.kind == Kind::AIGatewayRoute {
        for served in ports.values().flatten() {
            if let Some(hosts) = listeners::hostnames(served.hostname.as_deref(), hostnames) {
                out.entry(served.port).or_default().extend(hosts);
            }
        }
        return out;
    }
    let parents = graph.node(key).map(|n| n.parents()).unwrap_or_default();
    for attachment in parents.iter().flat_map(|p| &p.attached) {
        // A listener left out where Gateways share a port serves nothing.
        let served = ports.get(&attachment.port).is_some_and(|on_port| {
            on_port.iter().any(|s| {
                s.gateway.as_ref() == Some(&attachment.gateway) && s.name == attachment.listener
            })
        });
        if served {
            out.entry(attachment.port).or_default().extend(attachment.hostnames.iter().cloned());
        }
    }
    out
}

/// The AIServiceBackend or InferencePool a backendRef names, as the graph keys it.
pub(super) fn backend_key(route: &ObjectKey, b: &crate::api::RouteBackendRef) -> Option<ObjectKey> {
    let kind = match group_kind(&b.group, &b.kind, AIGATEWAY_GROUP, "AIServiceBackend") {
        (AIGATEWAY_GROUP, "AIServiceBackend") => Kind::AIServiceBackend,
        (INFERENCE_GROUP, "InferencePool") => Kind::InferencePool,
        _ => return None,
    };
    let ns = b.namespace.as_deref().unwrap_or(&route.namespace);
    Some(ObjectKey::new(kind, ns, &b.name))
}

/// The routes of the rules, each with the models it names exactly, and the rules' fallback
/// clusters.
fn compile_rules(
    graph: &Graph,
    key: &ObjectKey,
    spec: &AIGatewayRouteSpec,
) -> (Vec<(Route, BTreeSet<String>)>, Vec<Resource>) {
    let mut routes = Vec::new();
    let mut clusters = Vec::new();
    let limits = ratelimit::applied(graph, key);
    for (i, rule) in spec.rules.iter().enumerate() {
        let Some((action, fallback, pools)) = route_action(graph, key, i, rule) else { continue };
        let quotas = ratelimit::quota_limits(graph, key, rule);
        clusters.extend(fallback);
        let typed_per_filter_config = match pools {
            true => HashMap::from([(extproc::POOL_FILTER.to_string(), extproc::pool_phase_on())]),
            false => HashMap::new(),
        };
        // A rule without matches matches every request, as in Gateway API.
        let all = [AIRouteMatch::default()];
        let matches = if rule.matches.is_empty() { &all[..] } else { &rule.matches[..] };
        for (j, m) in matches.iter().enumerate() {
            // Envoy rejects a whole RouteConfiguration over one bad regex: leave the match out.
            let Some(headers) = m.headers.iter().map(header_matcher).collect() else { continue };
            let name = format!("{}/rule/{i}/match/{j}", key.path());
            let mut typed_per_filter_config = typed_per_filter_config.clone();
            if let Some(limits) = ratelimit::per_route(&limits, &name, &quotas) {
                typed_per_filter_config.insert(ratelimit::RATELIMIT_FILTER.into(), limits);
            }
            if let Some(local) = ratelimit::local_per_route(&limits, &name) {
                typed_per_filter_config.insert(ratelimit::LOCAL_RATELIMIT_FILTER.into(), local);
            }
            let route = Route {
                name,
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                    headers,
                    ..Default::default()
                }),
                action: Some(route::Action::Route(action.clone())),
                typed_per_filter_config,
                ..Default::default()
            };
            routes.push((route, exact_models(m).collect()));
        }
    }
    (routes, clusters)
}

/// The Envoy header matcher, or `None` for a regular expression Envoy would refuse (see
/// [`crate::api::regex`]: Rust's regex syntax is close to RE2's; they differ only on rare
/// features (class set operations, `\Q…\E`), where Envoy may still reject or this may leave a
/// match out).
fn header_matcher(h: &crate::api::HeaderMatch) -> Option<HeaderMatcher> {
    let pattern = match h.match_type {
        HeaderMatchType::Exact => string_matcher::MatchPattern::Exact(h.value.clone()),
        HeaderMatchType::RegularExpression => {
            crate::api::regex(&h.value).then_some(())?;
            string_matcher::MatchPattern::SafeRegex(RegexMatcher {
                regex: h.value.clone(),
                ..Default::default()
            })
        }
    };
    Some(HeaderMatcher {
        name: h.name.clone(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher { match_pattern: Some(pattern), ..Default::default() },
        )),
        ..Default::default()
    })
}

/// Where a rule sends its requests, or `None` when it has no usable backend (the rule is then
/// left out rather than routing to a cluster Envoy lacks). Backends refused for their credential
/// are left out when the rule has others.
///
/// When the usable backendRefs all share one priority: weighted clusters over them. Each tells
/// the translation ext_proc's upstream phase which backendRef it was picked by, in
/// [`ROUTE_BACKEND_HEADER`].
///
/// When they have several priorities (and are all AIServiceBackends): the rule's own fallback
/// cluster (see [`cluster::fallback`]) with the priorities as Envoy priority levels, and a retry
/// policy that moves each retry to the next level on a 5xx or a connection failure. The second
/// value is that cluster.
///
/// The third says whether a weighted cluster is an InferencePool's (named directly or behind an
/// AIServiceBackend): the route then turns the pool phase on.
fn route_action(
    graph: &Graph,
    key: &ObjectKey,
    rule_index: usize,
    rule: &RouteRule,
) -> Option<(RouteAction, Option<Resource>, bool)> {
    // (priority, cluster, weight, backendRef index, target) of every backendRef that compiles
    // to a cluster.
    let mut usable: Vec<(u32, String, u32, usize, ObjectKey)> = rule
        .backend_refs
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            let target = backend_key(key, b)?;
            let cluster = cluster::cluster_for(graph, &target)?;
            let weight = b.weight.unwrap_or(1).min(MAX_WEIGHT);
            Some((b.priority.unwrap_or(0), cluster, weight, i, target))
        })
        .filter(|u| u.2 > 0)
        .collect();
    // A backend refused for its credential takes no traffic while another can serve; when none
    // can, it stays, so that clients are told why rather than that no route matches.
    if usable.iter().any(|u| !graph.credential_refused(&u.4)) {
        usable.retain(|u| !graph.credential_refused(&u.4));
    }
    let top = usable.iter().map(|u| u.0).min()?;
    let timeout =
        rule.timeouts.as_ref().and_then(|t| t.request.as_deref()).and_then(parse_duration);
    let timeout = Some(timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT));
    let priorities: BTreeSet<u32> = usable.iter().map(|u| u.0).collect();
    let backends_only = usable.iter().all(|u| u.4.kind == Kind::AIServiceBackend);
    if priorities.len() > 1 && backends_only {
        let members: Vec<cluster::Member> = usable
            .iter()
            .map(|(priority, _, weight, i, target)| cluster::Member {
                route_backend: route_backend_id(key, rule_index, *i),
                backend: target.clone(),
                level: priorities.range(..priority).count() as u32,
                weight: *weight,
            })
            .collect();
        let name = cluster::fallback_cluster_name(key, rule_index);
        if let Some(fallback) = cluster::fallback(graph, &name, &members) {
            let action = RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(name)),
                retry_policy: Some(fallback_retries(priorities.len() as u32 - 1)),
                timeout,
                ..Default::default()
            };
            return Some((action, Some(fallback), false));
        }
    }
    // Envoy rejects a weighted cluster list naming a cluster twice, or summing to zero. Two
    // backendRefs to one backend share its weight and the first one's settings.
    let mut weights: BTreeMap<String, (u32, usize, Option<ObjectKey>)> = BTreeMap::new();
    let mut pools = false;
    for (_, cluster, weight, i, target) in usable.into_iter().filter(|u| u.0 == top) {
        let pool = cluster::pool_of(graph, &target);
        pools |= pool.is_some();
        let w = weights.entry(cluster).or_insert((0, i, pool));
        w.0 = w.0.saturating_add(weight);
    }
    let clusters = weights
        .into_iter()
        .map(|(name, (weight, i, pool))| weighted_cluster::ClusterWeight {
            name,
            weight: Some(UInt32Value { value: weight }),
            // One entry: prost writes a map in random order, which would change the version.
            typed_per_filter_config: pool
                .and_then(|pool| {
                    Some((picker::PICKER_FILTER.to_string(), picker_on(graph, &pool)?))
                })
                .into_iter()
                .collect(),
            request_headers_to_add: vec![HeaderValueOption {
                header: Some(HeaderValue {
                    key: ROUTE_BACKEND_HEADER.into(),
                    value: route_backend_id(key, rule_index, i),
                    ..Default::default()
                }),
                // A client's own value must not choose another backendRef's settings.
                append_action: header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd
                    as i32,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    let action = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
            WeightedCluster { clusters, ..Default::default() },
        )),
        timeout,
        ..Default::default()
    };
    Some((action, None, pools))
}

/// The per-route config that sends requests to `pool` through its endpoint picker, or `None`
/// when the pool names no picker. A picker whose Service is missing fails the requests closed.
fn picker_on(graph: &Graph, pool: &ObjectKey) -> Option<Any> {
    let address = cluster::picker_address(graph, pool)?;
    let cluster = picker::picker_cluster_name(pool);
    Some(picker::picker_on(pool, &cluster, &address.authority(), address.failure_mode))
}

/// Retries for a fallback cluster: each retry of a 5xx, reset or refused connection goes to the
/// next priority level, `lower_levels` times at most.
fn fallback_retries(lower_levels: u32) -> RetryPolicy {
    RetryPolicy {
        // `5xx` includes connect-failure, reset and refused-stream.
        retry_on: "5xx".into(),
        num_retries: Some(UInt32Value { value: lower_levels }),
        retry_priority: Some(retry_policy::RetryPriority {
            name: "envoy.retry_priorities.previous_priorities".into(),
            config_type: Some(retry_policy::retry_priority::ConfigType::TypedConfig(pack_any(
                PreviousPrioritiesConfig { update_frequency: 1 },
            ))),
        }),
        ..Default::default()
    }
}

/// A Gateway API duration (`1h`, `90s`, `1m30s`, `500ms`): one to four number-unit pairs.
/// Anything else is `None`, and the route keeps Envoy's default timeout.
pub(super) fn parse_duration(s: &str) -> Option<Duration> {
    let mut rest = s;
    let mut millis: u64 = 0;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        millis += n * unit;
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return None;
    }
    Some(Duration {
        seconds: i64::try_from(millis / 1000).ok()?,
        nanos: i32::try_from((millis % 1000) * 1_000_000).ok()?,
    })
}

/// The RouteConfiguration of `scope` on `port` (named as the scope), from `fragments` (in key
/// order; those not attached there are skipped): a virtual host per hostname the routes
/// attached there serve, and `*` for the rest. Each holds the fragments' routes in that scope,
/// of the fragments whose hostnames cover its own, the most specific hostname first (as Gateway
/// API gives precedence), then the 404s.
pub(super) fn assemble<'a>(
    port: u16,
    scope: Scope<'_>,
    fragments: impl Iterator<Item = (&'a ObjectKey, &'a Fragment)>,
) -> Assembled {
    let attached: Vec<(&ObjectKey, &Fragment, &BTreeSet<String>)> = fragments
        .filter(|(_, f)| f.serves())
        .filter_map(|(k, f)| Some((k, f, f.attachments.get(&port)?)))
        .collect();
    // Hostname → the fragments serving it, in key order; wildcards (and `*`) apart, as each may
    // cover many hosts.
    let mut exact: BTreeMap<&str, Vec<(&ObjectKey, &Fragment)>> = BTreeMap::new();
    let mut wildcards: BTreeMap<&str, Vec<(&ObjectKey, &Fragment)>> = BTreeMap::new();
    let any_host = |hostnames: &BTreeSet<String>| hostnames.len() == 1 && hostnames.contains("*");
    if attached.iter().all(|(_, _, hostnames)| any_host(hostnames)) {
        // The usual case, no hostnames anywhere: one virtual host, the fragments in key order.
        wildcards.insert("*", attached.iter().map(|(k, f, _)| (*k, *f)).collect());
    } else {
        for (k, f, hostnames) in &attached {
            for h in hostnames.iter() {
                let map = if h.starts_with('*') { &mut wildcards } else { &mut exact };
                map.entry(h.as_str()).or_default().push((*k, *f));
            }
        }
    }
    let mut hosts: BTreeSet<&str> = exact.keys().chain(wildcards.keys()).copied().collect();
    hosts.insert("*");
    let name = scope_name(port, scope);
    let head = RouteConfiguration {
        name: name.clone(),
        // Clients send `Host: name:port`; the domains are names.
        ignore_port_in_host_matching: hosts.len() > 1,
        // Held inline by its scope, Envoy would refuse every route of the scope over one
        // route to a cluster it lacks (an HTTPRoute backendRef that does not resolve answers
        // 500 instead, see `http_route.rs`), as it does for a RouteConfiguration in a listener.
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    };
    let mut config = head.encode_to_vec();
    let mut contributing: BTreeSet<&ObjectKey> = BTreeSet::new();
    for host in hosts {
        // The fragments serving `host`: under its own name, then under the wildcards covering
        // it, the most specific first; each once, under its most specific hostname.
        let mut covering: Vec<(&str, &Vec<(&ObjectKey, &Fragment)>)> =
            wildcards.iter().filter(|(w, _)| serves(w, host)).map(|(w, f)| (*w, f)).collect();
        covering.sort_by_key(|(w, _)| std::cmp::Reverse(specificity(w)));
        let groups: Vec<&Vec<(&ObjectKey, &Fragment)>> =
            exact.get(host).into_iter().chain(covering.into_iter().map(|(_, f)| f)).collect();
        // A fragment under several of the hostnames counts once; with one group (the usual
        // case: only `*`) there is nothing to check.
        let mut seen: HashSet<&ObjectKey> = HashSet::new();
        let members: Vec<(usize, &ObjectKey, &Fragment)> = groups
            .iter()
            .enumerate()
            .flat_map(|(rank, group)| group.iter().map(move |(k, f)| (rank, *k, *f)))
            .filter(|(_, k, _)| groups.len() == 1 || seen.insert(*k))
            .collect();
        // Repeated fields may arrive in pieces: the virtual host's name and domains, then each
        // fragment's routes, then the 404s, decode as one virtual host with the routes in that
        // order.
        let head = VirtualHost {
            name: host.into(),
            domains: vec![host.into()],
            // They picked the scope; the backend has no use for them.
            request_headers_to_remove: vec![SCOPE_PORT_HEADER.into(), SCOPE_HEADER.into()],
            ..Default::default()
        };
        let mut vhost = head.encode_to_vec();
        // The pool phase and the picker are off unless a route to a pool turns them on (field
        // 15, `typed_per_filter_config`, a map: see `canonical`).
        let off = [extproc::POOL_FILTER, picker::PICKER_FILTER]
            .map(|filter| (filter.to_string(), extproc::off().encode_to_vec()));
        super::canonical::append_map(&mut vhost, 15, off);
        // The AIGatewayRoutes' model routes first; then, when HTTPRoutes share the host, the
        // LLM API paths while the model is unknown (so that the router phase reads it and the
        // request is routed again), then the HTTPRoutes' routes in Gateway API's order.
        // In a model's scope, nothing after a route that takes every request for the model is
        // reachable: the rest of the virtual host is left out (HTTPRoutes' routes, the 404s).
        let mut cut = false;
        for (_, k, f) in &members {
            let bytes = f.bytes(scope);
            if !bytes.is_empty() {
                contributing.insert(*k);
            }
            vhost.extend_from_slice(bytes);
            if let Scope::Model(model) = scope
                && f.terminal.contains(model)
            {
                cut = true;
                break;
            }
        }
        if !cut {
            contributing.extend(members.iter().filter(|m| !m.2.ranked.is_empty()).map(|m| m.1));
            let mut ranked: Vec<(usize, &http_route::Precedence, &Vec<u8>)> = members
                .iter()
                .flat_map(|(rank, _, f)| f.ranked.iter().map(move |(p, bytes)| (*rank, p, bytes)))
                .collect();
            if !ranked.is_empty() {
                if members.iter().any(|(_, _, f)| !f.routes.is_empty()) {
                    let entry = VirtualHost { routes: api_entry().to_vec(), ..Default::default() };
                    vhost.extend_from_slice(&entry.encode_to_vec());
                }
                ranked.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
                for (_, _, bytes) in ranked {
                    vhost.extend_from_slice(bytes);
                }
            }
            let tail = VirtualHost { routes: not_found().to_vec(), ..Default::default() };
            vhost.extend_from_slice(&tail.encode_to_vec());
        }
        prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut config);
        prost::encoding::encode_varint(vhost.len() as u64, &mut config);
        config.extend_from_slice(&vhost);
    }
    // The default scope is every attached route's; a model's scope, the routes it holds.
    let sources = match scope {
        Scope::Default => attached.into_iter().map(|(k, _, _)| k.clone()).collect(),
        Scope::Model(_) => contributing.into_iter().cloned().collect(),
    };
    Assembled { config, sources }
}

/// Whether a route serving `hostname` (`*`: any) serves requests for the virtual host `host`.
fn serves(hostname: &str, host: &str) -> bool {
    hostname == "*" || crate::api::hostname_intersection(hostname, host) == Some(host)
}

/// Exact names before wildcards, longer before shorter, `*` last.
fn specificity(hostname: &str) -> (bool, usize) {
    (!hostname.starts_with('*'), hostname.len())
}

/// The 404s for requests no route matched: in Anthropic's error format on the Anthropic
/// endpoints and in Cohere's on Cohere's (the path, without its query, is one the translation
/// ext_proc let through), in OpenAI's everywhere else.
fn not_found() -> [Route; 3] {
    let anthropic = route_match::PathSpecifier::SafeRegex(RegexMatcher {
        regex: "(/anthropic)?/v1/messages/?".into(),
        ..Default::default()
    });
    let cohere = route_match::PathSpecifier::PathSeparatedPrefix("/cohere".into());
    [
        direct_404("not-found-anthropic", anthropic, NOT_FOUND_ANTHROPIC_BODY),
        direct_404("not-found-cohere", cohere, NOT_FOUND_COHERE_BODY),
        direct_404("not-found", route_match::PathSpecifier::Prefix("/".into()), NOT_FOUND_BODY),
    ]
}

/// The LLM API paths aixds's router phase serves, while a request has no model header: they
/// come before HTTPRoutes' routes so that the router phase reads the model from the body; the
/// route cache it clears then finds the model's route, or an HTTPRoute's, or the 404s.
fn api_entry() -> [Route; 3] {
    let unknown_model = HeaderMatcher {
        name: crate::api::MODEL_HEADER.into(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::PresentMatch(false)),
        ..Default::default()
    };
    let path = |regex: &str| {
        route_match::PathSpecifier::SafeRegex(RegexMatcher {
            regex: regex.into(),
            ..Default::default()
        })
    };
    let entries = [
        (
            "api-anthropic",
            path(r"(/anthropic)?/v1/messages(/count_tokens)?/?|/anthropic/v1/models(/.*)?"),
            NOT_FOUND_ANTHROPIC_BODY,
        ),
        ("api-cohere", path(r"/cohere/(v2/rerank|v1/models(/.*)?)/?"), NOT_FOUND_COHERE_BODY),
        (
            "api-openai",
            path(r"/v1/(chat/completions|completions|embeddings|responses|models(/.*)?)/?"),
            NOT_FOUND_BODY,
        ),
    ];
    entries.map(|(name, path, body)| {
        let mut route = direct_404(name, path, body);
        if let Some(m) = route.r#match.as_mut() {
            m.headers.push(unknown_model.clone());
        }
        route
    })
}

fn direct_404(name: &str, path: route_match::PathSpecifier, body: &str) -> Route {
    Route {
        name: name.into(),
        r#match: Some(RouteMatch { path_specifier: Some(path), ..Default::default() }),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status: 404,
            body: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString(body.into())),
                ..Default::default()
            }),
            ..Default::default()
        })),
        response_headers_to_add: vec![HeaderValueOption {
            header: Some(HeaderValue {
                key: "content-type".into(),
                value: "application/json".into(),
                ..Default::default()
            }),
            // Replaces the text/plain Envoy gives a direct response body.
            append_action: header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = |s| parse_duration(s).map(|d| (d.seconds, d.nanos));
        assert_eq!(d("60s"), Some((60, 0)));
        assert_eq!(d("1m"), Some((60, 0)));
        assert_eq!(d("500ms"), Some((0, 500_000_000)));
        assert_eq!(d("1h30m5s250ms"), Some((5405, 250_000_000)));
        for bad in ["", "s", "10", "1.5s", "10x", "123456s", "1h1m1s1ms1s", "-1s"] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn not_found_body_is_openai_error_json() {
        let v: serde_json::Value = serde_json::from_str(NOT_FOUND_BODY).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
}
