//! BackendTrafficPolicies' global rate limits: the rate limit filter every listener runs, and
//! per Envoy route the `rate_limits` of the policies that apply to it (see [`crate::ratelimit`]
//! for the service that counts, and [`crate::ratelimit::descriptor`] for what the descriptors
//! carry).
//!
//! Which policies apply to a route: those targeting it (an HTTPRoute target also names the
//! AIGatewayRoute of that name); without any, those targeting its parent Gateways, as Envoy
//! Gateway lets a route's own policy override its Gateway's. Only accepted policies apply.
//!
//! Each rule becomes a descriptor of its bucket, limit and client selectors. Its request cost
//! goes with the check before the request (default 1 per request, `number: 0` checks only); its
//! response cost is a second entry with the same actions sent when the stream is done, its
//! hits read from the dynamic metadata the translation ext_proc wrote (e.g.
//! `io.envoy.ai_gateway:llm_total_token`). Envoy honours per-entry costs only in the route's
//! `typed_per_filter_config`, so that is where the entries go. Each route counts apart unless
//! the rule is `shared`, as in Envoy Gateway.

use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::core::v3::{ApiVersion, GrpcService, grpc_service};
use envoy_types::pb::envoy::config::ratelimit::v3::RateLimitServiceConfig;
use envoy_types::pb::envoy::config::route::v3::rate_limit::action::{
    ActionSpecifier, GenericKey, HeaderValueMatch, MaskedRemoteAddress, RemoteAddress,
    RequestHeaders,
};
use envoy_types::pb::envoy::config::route::v3::rate_limit::{Action, HitsAddend};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, RateLimit, header_matcher};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::LocalRateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::extensions::filters::http::ratelimit::v3::{
    RateLimit as RateLimitFilter, RateLimitPerRoute, rate_limit::XRateLimitHeadersRfcVersion,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::{
    FractionalPercent, HttpStatus, StatusCode, TokenBucket, fractional_percent,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration, UInt32Value, UInt64Value};
use envoy_types::util::pack_any;

use crate::api::{
    Cidr, Kind, MODEL_HEADER, ObjectKey, RateLimitCostSpecifier, RateLimitRule,
    RateLimitSelectCondition, RouteRule, SelectorMatch, Spec,
};
use crate::bootstrap::XDS_CLUSTER;
use crate::graph::{Graph, RefKind};
use crate::ratelimit::descriptor::{BUCKET, CIDR, CONDITION, LIMIT, RESPONSE, SHADOW};
use crate::wire::METADATA_NAMESPACE;

pub(super) const RATELIMIT_FILTER: &str = "envoy.filters.http.ratelimit";
pub(super) const LOCAL_RATELIMIT_FILTER: &str = "envoy.filters.http.local_ratelimit";
/// The most buckets one route's local rules keep per Envoy (`Distinct` values beyond are
/// evicted, least recently used first).
const MAX_LOCAL_BUCKETS: u32 = 20_000;
/// The domain of every descriptor aixds compiles.
pub const DOMAIN: &str = "aixds";
/// How long a request waits for the check; past it the filter fails open (or closed).
const TIMEOUT_MILLIS: i32 = 250;

/// The listener's rate limit filter: after the router phase (which sets the model header that
/// selectors match on), before the pool phase and the router. It calls aixds over the
/// bootstrap's `aixds-xds` cluster; when aixds cannot answer in time the request goes on,
/// unless `fail_closed`, when it gets 503.
pub(super) fn filter(fail_closed: bool) -> HttpFilter {
    let config = RateLimitFilter {
        domain: DOMAIN.into(),
        timeout: Some(Duration { seconds: 0, nanos: TIMEOUT_MILLIS * 1_000_000 }),
        failure_mode_deny: fail_closed,
        rate_limit_service: Some(RateLimitServiceConfig {
            grpc_service: Some(GrpcService {
                target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                    grpc_service::EnvoyGrpc {
                        cluster_name: XDS_CLUSTER.into(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            transport_api_version: ApiVersion::V3 as i32,
        }),
        enable_x_ratelimit_headers: XRateLimitHeadersRfcVersion::DraftVersion03 as i32,
        disable_x_envoy_ratelimited_header: true,
        enable_retry_after_header: true,
        status_on_error: Some(HttpStatus { code: StatusCode::ServiceUnavailable as i32 }),
        ..Default::default()
    };
    HttpFilter {
        name: RATELIMIT_FILTER.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(config))),
        ..Default::default()
    }
}

/// The checks and charges of the QuotaPolicies on the AIServiceBackends a rule's backendRefs
/// name: for each bucket, a check before the request (cost 0: refused once spent) and a
/// charge when the stream is done, of the cost the ext_proc wrote for the backend that served.
/// A model quota applies where the backendRef's `modelNameOverride` is its model, or, without
/// an override, to requests whose model header is.
pub(super) fn quota_limits(graph: &Graph, route: &ObjectKey, rule: &RouteRule) -> Vec<RateLimit> {
    let mut out = Vec::new();
    for backend_ref in &rule.backend_refs {
        let Some(backend) = super::route::backend_key(route, backend_ref)
            .filter(|k| k.kind == Kind::AIServiceBackend)
        else {
            continue;
        };
        for quota in crate::ratelimit::quota::quotas(graph, &backend) {
            let model_match = match (quota.model, backend_ref.model_name_override.as_deref()) {
                (None, _) => None,
                (Some(model), Some(sent)) if model == sent => None,
                (Some(_), Some(_)) => continue,
                (Some(model), None) => Some(matches(
                    "model".into(),
                    header(MODEL_HEADER, string_matcher::MatchPattern::Exact(model.into())),
                    false,
                )),
            };
            let key = quota.metadata_key(&backend);
            if key.contains(['%', ':']) {
                continue;
            }
            for bucket in &quota.buckets {
                let mut actions = vec![
                    generic(BUCKET, &quota.bucket_id(bucket, &backend)),
                    generic(LIMIT, &bucket.limit.encode()),
                ];
                if bucket.shadow {
                    actions.push(generic(SHADOW, "true"));
                }
                actions.extend(model_match.clone());
                actions.extend(selector_actions(bucket.selectors));
                out.push(RateLimit {
                    actions: actions.clone(),
                    hits_addend: Some(HitsAddend {
                        number: Some(UInt64Value { value: 0 }),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                actions.push(generic(RESPONSE, "true"));
                out.push(RateLimit {
                    actions,
                    hits_addend: Some(HitsAddend {
                        format: format!("%DYNAMIC_METADATA({METADATA_NAMESPACE}:{key})%"),
                        ..Default::default()
                    }),
                    apply_on_stream_done: true,
                    ..Default::default()
                });
            }
        }
    }
    out
}

/// One rule of an accepted policy that applies to a route.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Applied {
    policy: ObjectKey,
    index: usize,
    rule: RateLimitRule,
    /// A `local` rule: each Envoy counts it on its own, with a token bucket.
    local: bool,
}

/// The rules that apply to `route`: its own policies', else its Gateways'.
pub(super) fn applied(graph: &Graph, route: &ObjectKey) -> Vec<Applied> {
    let own = rules_targeting(graph, route);
    if !own.is_empty() {
        return own;
    }
    let mut gateways: Vec<&ObjectKey> = graph
        .references(route)
        .into_iter()
        .filter(|(kind, node)| *kind == RefKind::ParentRef && node.key.kind == Kind::Gateway)
        .map(|(_, node)| &node.key)
        .collect();
    gateways.sort();
    gateways.dedup();
    gateways.into_iter().flat_map(|g| rules_targeting(graph, g)).collect()
}

fn rules_targeting(graph: &Graph, target: &ObjectKey) -> Vec<Applied> {
    let policies: Vec<_> = graph
        .targeting(target)
        .into_iter()
        .filter(|node| node.accepted())
        .filter_map(|node| match &node.object.as_deref()?.spec {
            Spec::BackendTrafficPolicy(p) => Some((node.key.clone(), p)),
            _ => None,
        })
        .collect();
    policies
        .into_iter()
        .flat_map(|(key, p)| {
            let global = p.global_rules().iter().map(|r| (r, false));
            let local = p.local_rules().iter().map(|r| (r, true));
            global.chain(local).enumerate().map(move |(index, (rule, local))| Applied {
                policy: key.clone(),
                index,
                rule: rule.clone(),
                local,
            })
        })
        .collect()
}

/// The per-route config of the rate limit filter for the Envoy route `route_name`, with the
/// `quotas` of its backends; `None` when nothing applies.
pub(super) fn per_route(
    applied: &[Applied],
    route_name: &str,
    quotas: &[RateLimit],
) -> Option<Any> {
    let mut rate_limits = quotas.to_vec();
    for a in applied.iter().filter(|a| !a.local) {
        let Some(limit) = a.rule.limit() else { continue };
        let mut bucket = format!("{}/{}/{}", a.policy.kind, a.policy.path(), a.index);
        if !a.rule.shared {
            bucket = format!("{bucket}/{route_name}");
        }
        let mut actions = vec![generic(BUCKET, &bucket), generic(LIMIT, &limit.encode())];
        if a.rule.shadow_mode {
            actions.push(generic(SHADOW, "true"));
        }
        actions.extend(selector_actions(&a.rule.client_selectors));
        let cost = a.rule.cost.as_ref();
        rate_limits.push(RateLimit {
            actions: actions.clone(),
            hits_addend: cost.and_then(|c| c.request.as_ref()).map(hits),
            ..Default::default()
        });
        if let Some(response) = cost.and_then(|c| c.response.as_ref()) {
            actions.push(generic(RESPONSE, "true"));
            rate_limits.push(RateLimit {
                actions,
                hits_addend: Some(hits(response)),
                apply_on_stream_done: true,
                ..Default::default()
            });
        }
    }
    (!rate_limits.is_empty())
        .then(|| pack_any(RateLimitPerRoute { rate_limits, ..Default::default() }))
}

/// The local rate limit filter: off unless a route's config turns it on (see
/// [`local_per_route`]).
pub(super) fn local_filter() -> HttpFilter {
    let config = LocalRateLimit { stat_prefix: "local_rate_limit".into(), ..Default::default() };
    HttpFilter {
        name: LOCAL_RATELIMIT_FILTER.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(config))),
        ..Default::default()
    }
}

/// The per-route config of the local rate limit filter: a token bucket per rule (per value,
/// for `Distinct` headers) in each Envoy, refilled whole every window; `None` when no local rule
/// applies. A descriptor's entries are the same actions the global rules use, matched exactly
/// (a blank value matches any: one bucket per value).
pub(super) fn local_per_route(applied: &[Applied], route_name: &str) -> Option<Any> {
    let mut descriptors = Vec::new();
    let mut rate_limits = Vec::new();
    for a in applied.iter().filter(|a| a.local) {
        let Some(limit) = a.rule.limit() else { continue };
        let bucket = format!("{}/{}/{}/{route_name}", a.policy.kind, a.policy.path(), a.index);
        let mut actions = vec![generic(BUCKET, &bucket)];
        actions.extend(selector_actions(&a.rule.client_selectors));
        let entries = actions.iter().filter_map(local_entry).collect();
        let requests = u32::try_from(limit.requests).unwrap_or(u32::MAX);
        let seconds = i64::try_from(limit.unit.seconds()).unwrap_or(i64::MAX);
        descriptors.push(LocalRateLimitDescriptor {
            entries,
            token_bucket: Some(TokenBucket {
                max_tokens: requests,
                tokens_per_fill: Some(UInt32Value { value: requests }),
                fill_interval: Some(Duration { seconds, nanos: 0 }),
            }),
            shadow_mode: a.rule.shadow_mode,
        });
        rate_limits.push(RateLimit { actions, ..Default::default() });
    }
    if descriptors.is_empty() {
        return None;
    }
    let all = || {
        Some(RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator: 100,
                denominator: fractional_percent::DenominatorType::Hundred as i32,
            }),
            runtime_key: String::new(),
        })
    };
    Some(pack_any(LocalRateLimit {
        stat_prefix: "local_rate_limit".into(),
        // Envoy wants a route's default bucket; requests no rule matches are not limited.
        token_bucket: Some(TokenBucket {
            max_tokens: u32::MAX,
            tokens_per_fill: Some(UInt32Value { value: u32::MAX }),
            fill_interval: Some(Duration { seconds: 1, nanos: 0 }),
        }),
        filter_enabled: all(),
        filter_enforced: all(),
        descriptors,
        rate_limits,
        always_consume_default_token_bucket: Some(BoolValue { value: false }),
        enable_x_ratelimit_headers: XRateLimitHeadersRfcVersion::DraftVersion03 as i32,
        enable_retry_after_header: true,
        max_dynamic_descriptors: Some(UInt32Value { value: MAX_LOCAL_BUCKETS }),
        ..Default::default()
    }))
}

/// The entry an action gives, as a local descriptor matches it: constant values as they are,
/// a request header's value blank (any value, each its own bucket).
fn local_entry(action: &Action) -> Option<Entry> {
    let (key, value) = match action.action_specifier.as_ref()? {
        ActionSpecifier::GenericKey(g) => (g.descriptor_key.clone(), g.descriptor_value.clone()),
        ActionSpecifier::HeaderValueMatch(m) => {
            (m.descriptor_key.clone(), m.descriptor_value.clone())
        }
        ActionSpecifier::RequestHeaders(h) => (h.descriptor_key.clone(), String::new()),
        _ => return None,
    };
    Some(Entry { key, value })
}

fn hits(cost: &RateLimitCostSpecifier) -> HitsAddend {
    match &cost.metadata {
        Some(m) if cost.from == "Metadata" => HitsAddend {
            format: format!("%DYNAMIC_METADATA({}:{})%", m.namespace, m.key),
            ..Default::default()
        },
        _ => HitsAddend {
            number: Some(UInt64Value { value: cost.number.unwrap_or(1) }),
            ..Default::default()
        },
    }
}

fn action(specifier: ActionSpecifier) -> Action {
    Action { action_specifier: Some(specifier) }
}

fn generic(key: &str, value: &str) -> Action {
    action(ActionSpecifier::GenericKey(GenericKey {
        descriptor_key: key.into(),
        descriptor_value: value.into(),
        ..Default::default()
    }))
}

/// A `header_value_match` entry `key` present when `matcher` matches (or, with `invert`, when
/// it does not); without it the rule does not apply to the request.
fn matches(key: String, matcher: HeaderMatcher, invert: bool) -> Action {
    action(ActionSpecifier::HeaderValueMatch(HeaderValueMatch {
        descriptor_key: format!("{CONDITION}{key}"),
        descriptor_value: "match".into(),
        expect_match: Some(BoolValue { value: !invert }),
        headers: vec![matcher],
        ..Default::default()
    }))
}

fn header(name: &str, pattern: string_matcher::MatchPattern) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher { match_pattern: Some(pattern), ..Default::default() },
        )),
        ..Default::default()
    }
}

fn regex(pattern: String) -> string_matcher::MatchPattern {
    string_matcher::MatchPattern::SafeRegex(RegexMatcher { regex: pattern, ..Default::default() })
}

/// The actions of every client selector, all of which must match (Envoy drops a descriptor
/// one of whose actions produces nothing).
fn selector_actions(selectors: &[RateLimitSelectCondition]) -> Vec<Action> {
    let mut out = Vec::new();
    for (s, selector) in selectors.iter().enumerate() {
        for (h, m) in selector.headers.iter().enumerate() {
            let key = format!("s{s}.h{h}:{}", m.name.to_ascii_lowercase());
            let value = m.value.clone().unwrap_or_default();
            out.push(match m.match_type() {
                Some(SelectorMatch::Distinct) => {
                    action(ActionSpecifier::RequestHeaders(RequestHeaders {
                        header_name: m.name.clone(),
                        descriptor_key: key,
                        skip_if_absent: false,
                    }))
                }
                Some(SelectorMatch::RegularExpression) => {
                    matches(key, header(&m.name, regex(value)), m.invert)
                }
                _ => matches(
                    key,
                    header(&m.name, string_matcher::MatchPattern::Exact(value)),
                    m.invert,
                ),
            });
        }
        let (inverted, plain): (Vec<_>, Vec<_>) = selector.methods.iter().partition(|m| m.invert);
        if !plain.is_empty() {
            let any = plain.iter().map(|m| m.value.as_str()).collect::<Vec<_>>().join("|");
            out.push(matches(format!("s{s}.method"), header(":method", regex(any)), false));
        }
        for (m, method) in inverted.iter().enumerate() {
            let exact = string_matcher::MatchPattern::Exact(method.value.clone());
            out.push(matches(format!("s{s}.not_method{m}"), header(":method", exact), true));
        }
        if let Some(path) = &selector.path {
            let pattern = regex(path.pattern());
            out.push(matches(format!("s{s}.path"), header(":path", pattern), path.invert));
        }
        if let Some(source) = &selector.source_cidr
            && let Some(cidr) = Cidr::parse(&source.value)
        {
            let prefix = |v4: bool| {
                let len = match (cidr.network.is_ipv4(), v4) {
                    (true, true) | (false, false) => u32::from(cidr.prefix),
                    (_, true) => 32,
                    (_, false) => 128,
                };
                Some(UInt32Value { value: len })
            };
            out.push(action(ActionSpecifier::MaskedRemoteAddress(MaskedRemoteAddress {
                v4_prefix_mask_len: prefix(true),
                v6_prefix_mask_len: prefix(false),
            })));
            out.push(generic(CIDR, &cidr.masked()));
            if source.type_.as_deref() == Some("Distinct") {
                out.push(action(ActionSpecifier::RemoteAddress(RemoteAddress::default())));
            }
        }
    }
    out
}
