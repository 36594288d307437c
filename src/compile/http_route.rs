//! HTTPRoutes: Gateway API routing by path, headers, query and method, compiled into Envoy
//! routes that sit after the AIGatewayRoutes' model routes in each virtual host.
//!
//! Takes: one HTTPRoute and the graph's view of its backends. Gives: its Envoy routes, each
//! with its [`Precedence`], so that the RouteConfiguration orders the routes of every HTTPRoute
//! on a host as Gateway API says: an exact path before any prefix, a longer prefix before a
//! shorter (a regular expression between the two, longer first), then a method match, more
//! header matches, more query matches; ties by route
//! `{namespace}/{name}` (aixds does not keep creation times), then rule and match order.
//!
//! Requests on these routes skip the translation ext_proc's router phase (they are not LLM API
//! calls aixds parses) and go to the backends as they came. A backendRef to an InferencePool
//! turns the endpoint picker on for that pool (per weighted cluster, so a rule split across two
//! pools calls the picker of the pool the split chose). A backendRef that does not resolve (not
//! found, another namespace without a ReferenceGrant, an unknown kind, a missing Service port)
//! keeps its share of the traffic and answers it 500, as Gateway API asks; a rule with no
//! backendRefs (and no redirect) answers 500.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, RuntimeFractionalPercent, header_value_option,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, Route, RouteAction,
    RouteMatch, WeightedCluster, header_matcher, query_parameter_matcher, redirect_action, route,
    route_action, route_match, weighted_cluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent};
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use prost::Message;

use super::{cluster, extproc, picker, ratelimit};
use crate::api::{
    HTTPBackendRef, HTTPRouteFilter, HTTPRouteMatch, HTTPRouteRule, HTTPRouteSpec, HeaderMatch,
    HeaderMatchType, HeaderModifier, Kind, ObjectKey, PathMatch, PathMatchType, PathModifier,
    REQUEST_HEADER_MODIFIER, REQUEST_MIRROR, REQUEST_REDIRECT, RESPONSE_HEADER_MODIFIER,
    URL_REWRITE,
};
use crate::graph::{Graph, http_backend_key};

/// Gateway API's largest backendRef weight (see `route.rs`).
const MAX_WEIGHT: u32 = 1_000_000;

/// Where one Envoy route of an HTTPRoute ranks among all the HTTPRoutes' routes on a host:
/// lower first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Precedence {
    /// 0 exact, 1 regular expression, 2 prefix (as Envoy Gateway ranks them; Gateway API leaves
    /// regular expressions to the implementation); then the longer value first.
    path: (u8, Reverse<usize>),
    /// 0 with a method match.
    method: u8,
    headers: Reverse<usize>,
    query: Reverse<usize>,
    route: String,
    rule: usize,
    matched: usize,
}

/// One HTTPRoute's Envoy routes, each with its precedence and encoded as an entry of a
/// VirtualHost's `routes`.
pub(super) fn compile(
    graph: &Graph,
    key: &ObjectKey,
    spec: &HTTPRouteSpec,
) -> Vec<(Precedence, Vec<u8>)> {
    let mut out = Vec::new();
    let limits = ratelimit::applied(graph, key);
    for (i, rule) in spec.rules.iter().enumerate() {
        let action = rule_action(graph, key, i, rule);
        let all = [HTTPRouteMatch::default()];
        let matches = if rule.matches.is_empty() { &all[..] } else { &rule.matches[..] };
        for (j, m) in matches.iter().enumerate() {
            // Envoy rejects a whole RouteConfiguration over one bad regex: leave the match out.
            let Some(route_match) = route_match(m) else { continue };
            let name = format!("httproute/{}/rule/{i}/match/{j}", key.path());
            let local = ratelimit::local_per_route(&limits, &name);
            let limits = ratelimit::per_route(&limits, &name, &[]);
            let mut route = Route {
                name,
                r#match: Some(route_match),
                action: Some(action.clone()),
                ..Default::default()
            };
            apply_filters(&mut route, &rule.filters);
            out.push((precedence(key, i, j, m), encode(route, limits, local)));
        }
    }
    out
}

/// The Services, InferencePools and Backends an HTTPRoute names, valid or not: their clusters
/// exist because of routes like this one.
pub(super) fn targets(key: &ObjectKey, spec: &HTTPRouteSpec) -> BTreeSet<ObjectKey> {
    spec.rules
        .iter()
        .flat_map(|r| r.all_backend_refs())
        .filter_map(|b| http_backend_key(key, b).ok())
        .collect()
}

fn precedence(key: &ObjectKey, rule: usize, matched: usize, m: &HTTPRouteMatch) -> Precedence {
    let path = m.path.clone().unwrap_or_default();
    let class = match path.match_type {
        PathMatchType::Exact => 0,
        PathMatchType::RegularExpression => 1,
        PathMatchType::PathPrefix => 2,
    };
    Precedence {
        path: (class, Reverse(path.value.trim_end_matches('/').len())),
        method: u8::from(m.method.is_none()),
        headers: Reverse(m.headers.len()),
        query: Reverse(m.query_params.len()),
        route: key.path(),
        rule,
        matched,
    }
}

/// The Envoy match, or `None` when a regular expression does not parse.
fn route_match(m: &HTTPRouteMatch) -> Option<RouteMatch> {
    let path = m.path.clone().unwrap_or_default();
    let path_specifier = match path.match_type {
        PathMatchType::Exact => route_match::PathSpecifier::Path(path.value.clone()),
        PathMatchType::PathPrefix => {
            let prefix = path.value.trim_end_matches('/');
            if prefix.is_empty() {
                route_match::PathSpecifier::Prefix("/".into())
            } else {
                // `/v2` matches `/v2` and `/v2/...`, not `/v2example`.
                route_match::PathSpecifier::PathSeparatedPrefix(prefix.into())
            }
        }
        PathMatchType::RegularExpression => {
            route_match::PathSpecifier::SafeRegex(regex(&path.value)?)
        }
    };
    let mut headers: Vec<HeaderMatcher> =
        m.headers.iter().map(header_matcher).collect::<Option<_>>()?;
    if let Some(method) = &m.method {
        headers.push(HeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(exact(
                method,
            ))),
            ..Default::default()
        });
    }
    let query_parameters = m
        .query_params
        .iter()
        .map(|q| {
            Some(QueryParameterMatcher {
                name: q.name.clone(),
                query_parameter_match_specifier: Some(
                    query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(
                        string_match(q)?,
                    ),
                ),
            })
        })
        .collect::<Option<_>>()?;
    Some(RouteMatch {
        path_specifier: Some(path_specifier),
        headers,
        query_parameters,
        ..Default::default()
    })
}

fn header_matcher(h: &HeaderMatch) -> Option<HeaderMatcher> {
    Some(HeaderMatcher {
        name: h.name.to_ascii_lowercase(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            string_match(h)?,
        )),
        ..Default::default()
    })
}

fn string_match(h: &HeaderMatch) -> Option<StringMatcher> {
    Some(match h.match_type {
        HeaderMatchType::Exact => exact(&h.value),
        HeaderMatchType::RegularExpression => StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::SafeRegex(regex(&h.value)?)),
            ..Default::default()
        },
    })
}

fn exact(value: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(value.into())),
        ..Default::default()
    }
}

/// An RE2 matcher, or `None` for a pattern Envoy would refuse (see [`crate::api::regex`]).
fn regex(pattern: &str) -> Option<RegexMatcher> {
    crate::api::regex(pattern).then_some(())?;
    Some(RegexMatcher { regex: pattern.into(), ..Default::default() })
}

/// What a rule does with a request: a redirect, a 500 when it has no backendRefs, or the
/// weighted backends.
fn rule_action(
    graph: &Graph,
    key: &ObjectKey,
    index: usize,
    rule: &HTTPRouteRule,
) -> route::Action {
    // A filter's type says which of its fields applies; any other is ignored, as Gateway API
    // says.
    let of_type = |t: &'static str| rule.filters.iter().filter(move |f| f.filter_type == t);
    if let Some(redirect) = of_type(REQUEST_REDIRECT).find_map(|f| f.request_redirect.as_ref()) {
        let path = rule.matches.first().and_then(|m| m.path.clone()).unwrap_or_default();
        return route::Action::Redirect(redirect_action(redirect, &path));
    }
    if rule.backend_refs.is_empty() {
        return internal_error();
    }
    let mut clusters = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (b, backend) in rule.backend_refs.iter().enumerate() {
        let weight = backend.weight.unwrap_or(1).min(MAX_WEIGHT);
        if weight == 0 {
            continue;
        }
        let target = http_backend_key(key, backend)
            .ok()
            .filter(|target| graph.reference_permitted(key, target));
        let cluster = target
            .as_ref()
            .and_then(|target| cluster::http_cluster_for(graph, target, backend.port));
        let (name, pool) = match cluster {
            Some(name) => (name, target.filter(|t| t.kind == Kind::InferencePool)),
            // No such cluster: Envoy answers its share with `cluster_not_found_response_code`.
            None => (format!("invalid/{}/{index}/{b}", key.path()), None),
        };
        // Envoy rejects a weighted cluster list naming a cluster twice: the first backendRef to
        // a cluster carries the weight of all of them.
        if let Some(&at) = names.get(&name) {
            let entry: &mut weighted_cluster::ClusterWeight = &mut clusters[at];
            let sum = entry.weight.map_or(0, |w| w.value).saturating_add(weight);
            entry.weight = Some(UInt32Value { value: sum });
            continue;
        }
        names.insert(name.clone(), clusters.len());
        // A pool's requests go through the pool phase (an Anthropic body becomes OpenAI's for
        // the picker) and its picker, per weighted cluster: the pool the split chose.
        let typed_per_filter_config = match pool {
            Some(pool) => {
                let mut filters = HashMap::from([(
                    extproc::POOL_FILTER.to_string(),
                    extproc::pool_phase_on_http_route(),
                )]);
                filters.extend(
                    picker_on(graph, &pool).map(|a| (picker::PICKER_FILTER.to_string(), a)),
                );
                filters
            }
            None => HashMap::new(),
        };
        let mut entry = weighted_cluster::ClusterWeight {
            name,
            weight: Some(UInt32Value { value: weight }),
            typed_per_filter_config,
            ..Default::default()
        };

        backend_filters(&mut entry, backend);
        clusters.push(entry);
    }
    if clusters.is_empty() {
        return internal_error();
    }
    let timeouts = rule.timeouts.as_ref();
    let timeout = match timeouts.and_then(|t| t.request.as_deref()) {
        Some(t) => super::route::parse_duration(t),
        None => Some(super::route::DEFAULT_REQUEST_TIMEOUT),
    };
    let per_try =
        timeouts.and_then(|t| t.backend_request.as_deref()).and_then(super::route::parse_duration);
    let mirrors = rule
        .filters
        .iter()
        .filter(|f| f.filter_type == REQUEST_MIRROR)
        .filter_map(|f| f.request_mirror.as_ref())
        .filter_map(|m| {
            let target = http_backend_key(key, &m.backend_ref)
                .ok()
                .filter(|target| graph.reference_permitted(key, target))?;
            let cluster = cluster::http_cluster_for(graph, &target, m.backend_ref.port)?;
            let (numerator, denominator) = match (&m.fraction, m.percent) {
                (Some(f), _) => (f.numerator, f.denominator),
                (None, Some(p)) => (p, 100),
                (None, None) => (100, 100),
            };
            Some(route_action::RequestMirrorPolicy {
                cluster,
                runtime_fraction: (numerator < denominator).then(|| RuntimeFractionalPercent {
                    default_value: Some(fraction(numerator, denominator)),
                    ..Default::default()
                }),
                ..Default::default()
            })
        })
        .collect();
    let rewrite = of_type(URL_REWRITE).find_map(|f| f.url_rewrite.as_ref());
    let path = rule.matches.first().and_then(|m| m.path.clone()).unwrap_or_default();
    let mut action = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
            WeightedCluster { clusters, ..Default::default() },
        )),
        cluster_not_found_response_code:
            route_action::ClusterNotFoundResponseCode::InternalServerError as i32,
        timeout,
        retry_policy: per_try.map(|per_try| {
            envoy_types::pb::envoy::config::route::v3::RetryPolicy {
                num_retries: Some(UInt32Value { value: 0 }),
                per_try_timeout: Some(per_try),
                ..Default::default()
            }
        }),
        request_mirror_policies: mirrors,
        ..Default::default()
    };
    if let Some(rewrite) = rewrite {
        if let Some(host) = &rewrite.hostname {
            action.host_rewrite_specifier =
                Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(host.clone()));
        }
        match rewrite.path.as_ref() {
            Some(PathModifier { replace_full_path: Some(full), .. }) => {
                action.regex_rewrite = Some(RegexMatchAndSubstitute {
                    pattern: Some(RegexMatcher { regex: "^/.*$".into(), ..Default::default() }),
                    substitution: full.clone(),
                });
            }
            Some(PathModifier { replace_prefix_match: Some(prefix), .. }) => {
                let matched = path.value.trim_end_matches('/');
                if prefix == "/" || prefix.is_empty() {
                    // `/strip/x` → `/x`, and `/strip` → `/`, without a doubled slash.
                    action.regex_rewrite = Some(RegexMatchAndSubstitute {
                        pattern: Some(RegexMatcher {
                            regex: format!("^{}/*", regex_syntax::escape(matched)),
                            ..Default::default()
                        }),
                        substitution: "/".into(),
                    });
                } else {
                    action.prefix_rewrite = prefix.trim_end_matches('/').to_string();
                }
            }
            _ => {}
        }
    }
    route::Action::Route(action)
}

fn fraction(numerator: u32, denominator: u32) -> FractionalPercent {
    let (numerator, kind) = match denominator {
        100 => (numerator, fractional_percent::DenominatorType::Hundred),
        10_000 => (numerator, fractional_percent::DenominatorType::TenThousand),
        1_000_000 => (numerator, fractional_percent::DenominatorType::Million),
        0 => (0, fractional_percent::DenominatorType::Million),
        d => (
            u32::try_from(u64::from(numerator) * 1_000_000 / u64::from(d)).unwrap_or(1_000_000),
            fractional_percent::DenominatorType::Million,
        ),
    };
    FractionalPercent { numerator, denominator: kind as i32 }
}

fn redirect_action(redirect: &crate::api::RequestRedirect, matched: &PathMatch) -> RedirectAction {
    let code = match redirect.status_code.unwrap_or(302) {
        301 => redirect_action::RedirectResponseCode::MovedPermanently,
        303 => redirect_action::RedirectResponseCode::SeeOther,
        307 => redirect_action::RedirectResponseCode::TemporaryRedirect,
        308 => redirect_action::RedirectResponseCode::PermanentRedirect,
        _ => redirect_action::RedirectResponseCode::Found,
    };
    let path_rewrite = match redirect.path.as_ref() {
        Some(PathModifier { replace_full_path: Some(full), .. }) => {
            Some(redirect_action::PathRewriteSpecifier::PathRedirect(full.clone()))
        }
        Some(PathModifier { replace_prefix_match: Some(prefix), .. }) => {
            let prefix = match prefix.trim_end_matches('/') {
                "" if matched.value.trim_end_matches('/').is_empty() => "/".to_string(),
                p => p.to_string(),
            };
            Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(prefix))
        }
        _ => None,
    };
    RedirectAction {
        host_redirect: redirect.hostname.clone().unwrap_or_default(),
        port_redirect: redirect.port.map(u32::from).unwrap_or_default(),
        response_code: code as i32,
        scheme_rewrite_specifier: redirect
            .scheme
            .clone()
            .map(redirect_action::SchemeRewriteSpecifier::SchemeRedirect),
        path_rewrite_specifier: path_rewrite,
        ..Default::default()
    }
}

fn internal_error() -> route::Action {
    route::Action::DirectResponse(DirectResponseAction { status: 500, ..Default::default() })
}

/// The header modifiers among `filters`: (request headers to add, to remove; response headers
/// to add, to remove). Rewrites, redirects and mirrors are part of the route's action (see
/// [`rule_action`]).
type HeaderEdits = (Vec<HeaderValueOption>, Vec<String>, Vec<HeaderValueOption>, Vec<String>);

fn header_edits(filters: &[HTTPRouteFilter]) -> HeaderEdits {
    let mut out = HeaderEdits::default();
    for f in filters {
        let (modifier, add, remove) = match f.filter_type.as_str() {
            REQUEST_HEADER_MODIFIER => (&f.request_header_modifier, &mut out.0, &mut out.1),
            RESPONSE_HEADER_MODIFIER => (&f.response_header_modifier, &mut out.2, &mut out.3),
            _ => continue,
        };
        if let Some(m) = modifier {
            add.extend(header_options(m));
            remove.extend(m.remove.iter().cloned());
        }
    }
    out
}

/// A rule's header modifiers, on each of its routes.
fn apply_filters(route: &mut Route, filters: &[HTTPRouteFilter]) {
    let (request_add, request_remove, response_add, response_remove) = header_edits(filters);
    route.request_headers_to_add = request_add;
    route.request_headers_to_remove = request_remove;
    route.response_headers_to_add = response_add;
    route.response_headers_to_remove = response_remove;
}

/// A backendRef's header modifiers, on its weighted cluster.
fn backend_filters(entry: &mut weighted_cluster::ClusterWeight, backend: &HTTPBackendRef) {
    let (request_add, request_remove, response_add, response_remove) =
        header_edits(&backend.filters);
    entry.request_headers_to_add = request_add;
    entry.request_headers_to_remove = request_remove;
    entry.response_headers_to_add = response_add;
    entry.response_headers_to_remove = response_remove;
}

/// `set` overwrites, `add` appends to what the request already has.
fn header_options(m: &HeaderModifier) -> Vec<HeaderValueOption> {
    let option = |h: &crate::api::HttpHeader, action: header_value_option::HeaderAppendAction| {
        HeaderValueOption {
            header: Some(HeaderValue {
                key: h.name.to_ascii_lowercase(),
                value: h.value.clone(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        }
    };
    let set = m
        .set
        .iter()
        .map(|h| option(h, header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd));
    let add = m
        .add
        .iter()
        .map(|h| option(h, header_value_option::HeaderAppendAction::AppendIfExistsOrAdd));
    set.chain(add).collect()
}

/// `route` as an entry of a VirtualHost's `routes`, with the router phase off (an HTTPRoute's
/// request is not an LLM API call for it to parse). prost writes a map in random order, which
/// would give the same route new bytes (and the RouteConfiguration a new version) on every
/// compile: the route's and its weighted clusters' `typed_per_filter_config` are written here
/// with their keys sorted (see `canonical`).
fn encode(mut route: Route, limits: Option<Any>, local: Option<Any>) -> Vec<u8> {
    use super::canonical::{append_field, append_map};
    let encoded = |filters: HashMap<String, Any>| -> Vec<(String, Vec<u8>)> {
        filters.into_iter().map(|(k, v)| (k, v.encode_to_vec())).collect()
    };
    let mut bytes = Vec::new();
    let action = route.action.take();
    bytes.extend(route.encode_to_vec());
    match action {
        Some(route::Action::Route(mut action)) => {
            let clusters = match action.cluster_specifier.take() {
                Some(route_action::ClusterSpecifier::WeightedClusters(w)) => w.clusters,
                other => {
                    action.cluster_specifier = other;
                    Vec::new()
                }
            };
            let mut action_bytes = action.encode_to_vec();
            if !clusters.is_empty() {
                let mut weighted = Vec::new();
                for mut cluster in clusters {
                    let filters = std::mem::take(&mut cluster.typed_per_filter_config);
                    let mut cluster_bytes = cluster.encode_to_vec();
                    // ClusterWeight.typed_per_filter_config is field 10.
                    append_map(&mut cluster_bytes, 10, encoded(filters));
                    // WeightedCluster.clusters is field 1.
                    append_field(&mut weighted, 1, &cluster_bytes);
                }
                // RouteAction.weighted_clusters is field 3.
                append_field(&mut action_bytes, 3, &weighted);
            }
            // Route.route is field 2.
            append_field(&mut bytes, 2, &action_bytes);
        }
        Some(other) => {
            bytes = Route { action: Some(other), ..route }.encode_to_vec();
        }
        None => {}
    }
    // Route.typed_per_filter_config is field 13.
    let mut filters = HashMap::from([(extproc::EXT_PROC_FILTER.to_string(), extproc::off())]);
    if let Some(limits) = limits {
        filters.insert(ratelimit::RATELIMIT_FILTER.into(), limits);
    }
    if let Some(local) = local {
        filters.insert(ratelimit::LOCAL_RATELIMIT_FILTER.into(), local);
    }
    append_map(&mut bytes, 13, encoded(filters));
    let mut entry = Vec::new();
    // VirtualHost.routes is field 3.
    append_field(&mut entry, 3, &bytes);
    entry
}

/// The picker's per-route config for `pool` (see `route.rs`).
fn picker_on(graph: &Graph, pool: &ObjectKey) -> Option<Any> {
    let address = cluster::picker_address(graph, pool)?;
    let cluster = picker::picker_cluster_name(pool);
    Some(picker::picker_on(pool, &cluster, &address.authority(), address.failure_mode))
}
