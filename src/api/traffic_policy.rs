//! Envoy Gateway's `BackendTrafficPolicy` (`gateway.envoyproxy.io/v1alpha1`): aixds reads its
//! `rateLimit` (global rules, counted by aixds's rate limit service) and refuses, naming them,
//! the other traffic features it does not apply.
//!
//! Targets: Gateways (every route attached to them), HTTPRoutes and AIGatewayRoutes. An
//! HTTPRoute target also matches an AIGatewayRoute of that name, because Envoy AI Gateway turns
//! each AIGatewayRoute into an HTTPRoute of the same name and users target that.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ratelimit::descriptor::{Limit, Unit};

/// The most rules one policy may have (Envoy Gateway's bound).
pub const MAX_RATE_LIMIT_RULES: usize = 128;

// The CRD keeps unknown spec fields (`x-kubernetes-preserve-unknown-fields`): aixds must see the
// traffic features it does not apply to refuse them, not have them pruned away.
#[derive(
    kube::CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "gateway.envoyproxy.io",
    version = "v1alpha1",
    kind = "BackendTrafficPolicy",
    namespaced,
    status = "PolicyStatus"
)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[serde(rename_all = "camelCase")]
pub struct BackendTrafficPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<serde_json::Map<String, serde_json::Value>>")]
    pub target_selectors: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// Every other field (retry, timeout, circuitBreaker, ...): not applied, so refused.
    #[serde(flatten)]
    #[schemars(skip)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// Gateway API's `PolicyStatus`: per target (ancestor), the controller and its conditions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    #[serde(default)]
    #[schemars(with = "Vec<serde_json::Map<String, serde_json::Value>>")]
    pub ancestors: Vec<serde_json::Value>,
}

/// Gateway API's `LocalPolicyTargetReferenceWithSectionName`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetReference {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// `Global` or `Local`; optional since Envoy Gateway 1.6 (then whichever is set).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<RateLimitRules>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<RateLimitRules>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitRules {
    #[serde(default)]
    pub rules: Vec<RateLimitRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitRule {
    #[serde(default)]
    pub client_selectors: Vec<RateLimitSelectCondition>,
    #[serde(default)]
    pub limit: RateLimitValue,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<RateLimitCost>,
    /// One counter for every route the policy applies to, instead of one per route.
    #[serde(default)]
    pub shared: bool,
    #[serde(default)]
    pub shadow_mode: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_rate_limit_headers: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitValue {
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub unit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub from_metadata: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitCost {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RateLimitCostSpecifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<RateLimitCostSpecifier>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitCostSpecifier {
    /// `Number` or `Metadata`.
    #[serde(default)]
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<RateLimitCostMetadata>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitCostMetadata {
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSelectCondition {
    #[serde(default)]
    pub headers: Vec<HeaderMatchSelector>,
    #[serde(default, rename = "sourceCIDR", skip_serializing_if = "Option::is_none")]
    pub source_cidr: Option<SourceMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<MethodMatchSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatchSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<serde_json::Map<String, serde_json::Value>>")]
    pub query_params: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatchSelector {
    /// `Exact` (the default), `RegularExpression` or `Distinct`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default)]
    pub invert: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceMatch {
    /// `Exact` (the default: one counter for the range) or `Distinct` (one per address).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    pub value: String,
    #[serde(default)]
    pub invert: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MethodMatchSelector {
    pub value: String,
    #[serde(default)]
    pub invert: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PathMatchSelector {
    /// `PathPrefix` (the default), `Exact` or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default)]
    pub invert: bool,
}

/// How a header selector matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectorMatch {
    Exact,
    RegularExpression,
    Distinct,
}

impl HeaderMatchSelector {
    pub fn match_type(&self) -> Option<SelectorMatch> {
        match self.type_.as_deref().unwrap_or("Exact") {
            "Exact" => Some(SelectorMatch::Exact),
            "RegularExpression" => Some(SelectorMatch::RegularExpression),
            "Distinct" => Some(SelectorMatch::Distinct),
            _ => None,
        }
    }
}

/// A `sourceCIDR`, parsed: the network and its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, prefix) = s.split_once('/')?;
        let ip: std::net::IpAddr = ip.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(())?;
        let network = match ip {
            std::net::IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                std::net::IpAddr::V4((u32::from(v4) & mask).into())
            }
            std::net::IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                std::net::IpAddr::V6((u128::from(v6) & mask).into())
            }
        };
        Some(Cidr { network, prefix })
    }

    /// As Envoy's `masked_remote_address` writes a client inside it.
    pub fn masked(&self) -> String {
        format!("{}/{}", self.network, self.prefix)
    }
}

impl PathMatchSelector {
    /// The regular expression Envoy matches `:path` (which carries the query too) against:
    /// prefix and exact matches allow a query after the path.
    pub fn pattern(&self) -> String {
        let value = self.value.as_deref().unwrap_or("/");
        match self.type_.as_deref().unwrap_or("PathPrefix") {
            "Exact" => format!("{}(\\?.*)?", regex_syntax::escape(value)),
            "RegularExpression" => value.to_string(),
            _ => format!("{}([/?].*)?", regex_syntax::escape(value.trim_end_matches('/'))),
        }
    }
}

impl RateLimitRule {
    pub fn limit(&self) -> Option<Limit> {
        Some(Limit { requests: self.limit.requests, unit: Unit::parse(&self.limit.unit)? })
    }
}

impl BackendTrafficPolicySpec {
    /// Every target, `targetRef` first.
    pub fn targets(&self) -> impl Iterator<Item = &PolicyTargetReference> {
        self.target_ref.iter().chain(&self.target_refs)
    }

    /// The global rules to apply; empty without a usable `rateLimit`.
    pub fn global_rules(&self) -> &[RateLimitRule] {
        match &self.rate_limit {
            Some(RateLimitSpec { global: Some(g), type_, .. })
                if type_.as_deref().is_none_or(|t| t == "Global") =>
            {
                &g.rules
            }
            _ => &[],
        }
    }

    /// The local rules to apply (each Envoy counts on its own); empty without any.
    pub fn local_rules(&self) -> &[RateLimitRule] {
        match &self.rate_limit {
            Some(RateLimitSpec { local: Some(l), type_, .. })
                if type_.as_deref().is_none_or(|t| t == "Local") =>
            {
                &l.rules
            }
            _ => &[],
        }
    }

    /// What aixds cannot apply as written, each naming its field. A policy with problems is
    /// not accepted and applies nothing.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for field in self.other.keys() {
            out.push(format!("spec.{field} is not supported by aixds (only spec.rateLimit is)"));
        }
        if !self.target_selectors.is_empty() {
            out.push("spec.targetSelectors are not supported; name targets in targetRefs".into());
        }
        if self.target_ref.is_none() && self.target_refs.is_empty() {
            out.push("spec.targetRefs is empty".into());
        }
        for (i, t) in self.targets().enumerate() {
            if t.section_name.is_some() {
                out.push(format!("spec.targetRefs[{i}].sectionName is not supported"));
            }
        }
        let Some(rate_limit) = &self.rate_limit else {
            out.push("spec.rateLimit is missing: aixds applies only rate limits".into());
            return out;
        };
        match (rate_limit.type_.as_deref(), &rate_limit.global, &rate_limit.local) {
            (Some("Global"), None, _) => out.push("spec.rateLimit.global is missing".into()),
            (Some("Local"), _, None) => out.push("spec.rateLimit.local is missing".into()),
            (None, None, None) => out.push("spec.rateLimit has neither global nor local".into()),
            (Some("Global" | "Local") | None, _, _) => {}
            (Some(other), _, _) => {
                out.push(format!("spec.rateLimit.type {other:?} is not Global or Local"))
            }
        }
        for (which, rules) in [("global", self.global_rules()), ("local", self.local_rules())] {
            if rules.len() > MAX_RATE_LIMIT_RULES {
                out.push(format!(
                    "spec.rateLimit.{which}.rules has {} rules, more than {MAX_RATE_LIMIT_RULES}",
                    rules.len()
                ));
            }
            for (r, rule) in rules.iter().enumerate() {
                let at = format!("spec.rateLimit.{which}.rules[{r}]");
                out.extend(rule_problems(&at, rule));
                if which == "local" {
                    if rule.cost.is_some() {
                        out.push(format!(
                            "{at}.cost: local rate limits count requests only (Envoy Gateway \
                             allows no cost there); use a Global rule for token budgets"
                        ));
                    }
                    if rule.client_selectors.iter().any(|s| s.source_cidr.is_some()) {
                        out.push(format!("{at}: sourceCIDR is not supported in local rate limits"));
                    }
                }
            }
        }
        out
    }
}

fn rule_problems(at: &str, rule: &RateLimitRule) -> Vec<String> {
    let mut out = Vec::new();
    if Unit::parse(&rule.limit.unit).is_none() {
        out.push(format!(
            "{at}.limit.unit {:?} is not Second, Minute, Hour, Day, Month or Year",
            rule.limit.unit
        ));
    }
    if rule.limit.from_metadata.is_some() {
        out.push(format!("{at}.limit.fromMetadata is not supported"));
    }
    if let Some(h) = rule.x_rate_limit_headers.as_deref().filter(|h| *h != "DraftVersion03") {
        out.push(format!("{at}.xRateLimitHeaders {h:?} is not supported (DraftVersion03 is)"));
    }
    out.extend(selector_problems(at, rule));
    if let Some(cost) = &rule.cost {
        for (which, spec) in [("request", &cost.request), ("response", &cost.response)] {
            let Some(spec) = spec else { continue };
            let at = format!("{at}.cost.{which}");
            match (spec.from.as_str(), spec.number, &spec.metadata) {
                ("Number", Some(n), None) if n <= 1_000_000_000 => {}
                ("Number", Some(_), None) => out.push(format!("{at}.number is over 1000000000")),
                ("Metadata", None, Some(m)) => {
                    let simple = |s: &str| {
                        !s.is_empty()
                            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                    };
                    if !simple(&m.namespace) || !simple(&m.key) {
                        out.push(format!(
                            "{at}.metadata: namespace and key must be non-empty and use only \
                             letters, digits, '.', '_' and '-'"
                        ));
                    }
                }
                ("Number" | "Metadata", _, _) => out.push(format!(
                    "{at}: from Number takes number, from Metadata takes metadata, not both"
                )),
                (other, _, _) => out.push(format!("{at}.from {other:?} is not Number or Metadata")),
            }
        }
    }
    out
}

/// What is wrong with a rule's `clientSelectors`.
pub(super) fn selector_problems(at: &str, rule: &RateLimitRule) -> Vec<String> {
    let mut out = Vec::new();
    if rule.client_selectors.len() > 8 {
        out.push(format!("{at}.clientSelectors has more than 8 selectors"));
    }
    for (s, selector) in rule.client_selectors.iter().enumerate() {
        let at = format!("{at}.clientSelectors[{s}]");
        if !selector.query_params.is_empty() {
            out.push(format!("{at}.queryParams are not supported"));
        }
        if selector.headers.is_empty()
            && selector.source_cidr.is_none()
            && selector.methods.is_empty()
            && selector.path.is_none()
            && selector.query_params.is_empty()
        {
            out.push(format!("{at} selects nothing: give headers, sourceCIDR, methods or path"));
        }
        if selector.headers.len() > 16 {
            out.push(format!("{at}.headers has more than 16 matches"));
        }
        for (h, header) in selector.headers.iter().enumerate() {
            let at = format!("{at}.headers[{h}]");
            if !crate::api::token(&header.name) || header.name.len() > 256 {
                out.push(format!("{at}.name {:?} is not an HTTP header name", header.name));
            }
            match (header.match_type(), &header.value) {
                (None, _) => out.push(format!(
                    "{at}.type {:?} is not Exact, RegularExpression or Distinct",
                    header.type_.as_deref().unwrap_or("")
                )),
                (Some(SelectorMatch::Distinct), Some(_)) => {
                    out.push(format!("{at}: a Distinct match takes no value"))
                }
                (Some(SelectorMatch::Distinct), None) if header.invert => {
                    out.push(format!("{at}: a Distinct match cannot be inverted"))
                }
                (Some(SelectorMatch::Exact | SelectorMatch::RegularExpression), None) => {
                    out.push(format!("{at} needs a value"))
                }
                (Some(SelectorMatch::RegularExpression), Some(regex)) => {
                    if !crate::api::regex(regex) {
                        out.push(format!(
                            "{at}.value {regex:?} is not a regular expression Envoy takes"
                        ));
                    }
                }
                (Some(_), Some(value)) => {
                    if value.len() > 1024 || value.bytes().any(|b| b.is_ascii_control()) {
                        out.push(format!("{at}.value is not a header value"));
                    }
                }
                (Some(_), None) => {}
            }
        }
        if let Some(cidr) = &selector.source_cidr {
            if Cidr::parse(&cidr.value).is_none() {
                out.push(format!("{at}.sourceCIDR.value {:?} is not a CIDR", cidr.value));
            }
            if !matches!(cidr.type_.as_deref(), None | Some("Exact") | Some("Distinct")) {
                out.push(format!("{at}.sourceCIDR.type is not Exact or Distinct"));
            }
            if cidr.invert {
                out.push(format!("{at}.sourceCIDR.invert is not supported"));
            }
        }
        for (m, method) in selector.methods.iter().enumerate() {
            if !crate::api::HTTP_METHODS.contains(&method.value.as_str()) {
                out.push(format!(
                    "{at}.methods[{m}].value {:?} is not an HTTP method",
                    method.value
                ));
            }
        }
        if let Some(path) = &selector.path {
            let value = path.value.as_deref().unwrap_or("/");
            match path.type_.as_deref().unwrap_or("PathPrefix") {
                "Exact" | "PathPrefix" => {
                    if !value.starts_with('/')
                        || value.bytes().any(|b| b.is_ascii_control() || b == b'?')
                    {
                        out.push(format!("{at}.path.value {value:?} is not a path"));
                    }
                }
                "RegularExpression" => {}
                other => out.push(format!(
                    "{at}.path.type {other:?} is not Exact, PathPrefix or RegularExpression"
                )),
            }
            if !crate::api::regex(&path.pattern()) {
                out.push(format!(
                    "{at}.path.value {value:?} makes a regular expression Envoy does not take"
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> BackendTrafficPolicySpec {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn the_upstream_token_policy_is_accepted() {
        let p = policy(
            r#"
targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
rateLimit:
  type: Global
  global:
    rules:
      - clientSelectors: [{headers: [{name: x-tenant-id, type: Distinct}]}]
        limit: {requests: 1000, unit: Hour}
        cost:
          request: {from: Number, number: 0}
          response: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: llm_total_token}}
"#,
        );
        assert_eq!(p.problems(), Vec::<String>::new());
        assert_eq!(p.global_rules()[0].limit(), Some(Limit { requests: 1000, unit: Unit::Hour }));
    }

    #[test]
    fn what_is_not_applied_is_named() {
        let p = policy(
            r#"
targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r, sectionName: s}]
retry: {numRetries: 3}
rateLimit:
  type: Global
  global:
    rules:
      - clientSelectors:
          - headers: [{name: "bad header", type: Exact, value: x}, {name: x-a, type: Distinct, value: v}]
            sourceCIDR: {value: 10.0.0.0/33}
            methods: [{value: FETCH}]
            path: {type: RegularExpression, value: "(("}
          - {}
        limit: {requests: 1, unit: Week}
        cost: {request: {from: Metadata, metadata: {namespace: "", key: k}}}
"#,
        );
        let problems = p.problems().join("\n");
        for needle in [
            "spec.retry is not supported",
            "targetRefs[0].sectionName",
            "limit.unit \"Week\"",
            "headers[0].name \"bad header\"",
            "headers[1]: a Distinct match takes no value",
            "sourceCIDR.value \"10.0.0.0/33\"",
            "methods[0].value \"FETCH\"",
            "path.value \"((\"",
            "clientSelectors[1] selects nothing",
            "cost.request.metadata",
        ] {
            assert!(problems.contains(needle), "{needle} in\n{problems}");
        }
        let local = policy(
            "targetRefs: [{kind: Gateway, name: g}]\nrateLimit: {type: Local, local: {rules: \
             [{limit: {requests: 1, unit: Second}, cost: {request: {from: Number, number: 2}}}]}}",
        );
        let problems = local.problems();
        assert!(problems[0].contains("local rate limits count requests only"), "{problems:?}");
    }

    #[test]
    fn cidrs_mask_as_envoy_does() {
        assert_eq!(Cidr::parse("10.1.2.3/8").unwrap().masked(), "10.0.0.0/8");
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().masked(), "0.0.0.0/0");
        assert_eq!(Cidr::parse("2001:db8::1/32").unwrap().masked(), "2001:db8::/32");
        assert_eq!(Cidr::parse("::/0").unwrap().masked(), "::/0");
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "::/129"] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }
}
