//! Gateway API `HTTPRoute` (`gateway.networking.k8s.io/v1`): path, header, query and method
//! routing to Services, InferencePools and Envoy Gateway Backends, with the standard filters.
//!
//! Field names and defaults are Gateway API's, so users' HTTPRoutes (the Inference Extension's
//! guides route to InferencePools with them) apply unchanged.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{HeaderMatch, HeaderMatchType, HttpHeader, ParentReference, RouteTimeouts};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default = "default_rules")]
    pub rules: Vec<HTTPRouteRule>,
}

/// Gateway API's default: one rule matching every request, with no backends (so a 500).
fn default_rules() -> Vec<HTTPRouteRule> {
    vec![HTTPRouteRule::default()]
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HTTPRouteMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HTTPRouteFilter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<HTTPBackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<RouteTimeouts>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// Same shape as a header match: `type` (`Exact` by default), `name`, `value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<HeaderMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PathMatch {
    #[serde(default, rename = "type")]
    pub match_type: PathMatchType,
    #[serde(default = "root")]
    pub value: String,
}

fn root() -> String {
    "/".into()
}

impl Default for PathMatch {
    fn default() -> Self {
        PathMatch { match_type: PathMatchType::PathPrefix, value: root() }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PathMatchType {
    Exact,
    #[default]
    PathPrefix,
    RegularExpression,
}

/// One filter: `type` names which of the other fields applies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteFilter {
    #[serde(rename = "type")]
    pub filter_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    #[serde(default, rename = "urlRewrite", skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<UrlRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirror>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HeaderModifier {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HttpHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HttpHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UrlRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PathModifier {
    /// `ReplaceFullPath` or `ReplacePrefixMatch`.
    #[serde(rename = "type")]
    pub modifier_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestRedirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestMirror {
    pub backend_ref: HTTPBackendRef,
    /// The share of requests mirrored, 0–100; all when neither this nor `fraction` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<Fraction>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Fraction {
    pub numerator: u32,
    #[serde(default = "hundred")]
    pub denominator: u32,
}

fn hundred() -> u32 {
    100
}

/// A backendRef: a Service (the default kind), an InferencePool or an Envoy Gateway Backend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPBackendRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HTTPRouteFilter>,
}

impl HTTPRouteRule {
    /// Every backendRef of the rule: its backends' and those its mirror filters (of the rule or
    /// of a backendRef) copy requests to.
    pub fn all_backend_refs(&self) -> impl Iterator<Item = &HTTPBackendRef> {
        let mirrors = self
            .filters
            .iter()
            .chain(self.backend_refs.iter().flat_map(|b| &b.filters))
            .filter(|f| f.filter_type == REQUEST_MIRROR)
            .filter_map(|f| f.request_mirror.as_ref().map(|m| &m.backend_ref));
        self.backend_refs.iter().chain(mirrors)
    }
}

/// The filter types aixds compiles, as Gateway API names them.
pub const REQUEST_HEADER_MODIFIER: &str = "RequestHeaderModifier";
pub const RESPONSE_HEADER_MODIFIER: &str = "ResponseHeaderModifier";
pub const URL_REWRITE: &str = "URLRewrite";
pub const REQUEST_REDIRECT: &str = "RequestRedirect";
pub const REQUEST_MIRROR: &str = "RequestMirror";

impl HTTPRouteFilter {
    /// Why aixds cannot apply this filter as written, naming the field; `None` when it can.
    pub fn problem(&self) -> Option<String> {
        let missing = |field: &str| Some(format!("type {} needs {field}", self.filter_type));
        match self.filter_type.as_str() {
            REQUEST_HEADER_MODIFIER if self.request_header_modifier.is_none() => {
                missing("requestHeaderModifier")
            }
            RESPONSE_HEADER_MODIFIER if self.response_header_modifier.is_none() => {
                missing("responseHeaderModifier")
            }
            URL_REWRITE => match &self.url_rewrite {
                None => missing("urlRewrite"),
                Some(rewrite) => rewrite.path.as_ref().and_then(PathModifier::problem),
            },
            REQUEST_REDIRECT => match &self.request_redirect {
                None => missing("requestRedirect"),
                Some(redirect) => redirect.problem(),
            },
            REQUEST_MIRROR if self.request_mirror.is_none() => missing("requestMirror"),
            REQUEST_HEADER_MODIFIER | RESPONSE_HEADER_MODIFIER | REQUEST_MIRROR => None,
            other => Some(format!(
                "filter type {other:?} is not supported: aixds applies {REQUEST_HEADER_MODIFIER}, \
                 {RESPONSE_HEADER_MODIFIER}, {URL_REWRITE}, {REQUEST_REDIRECT} and {REQUEST_MIRROR}"
            )),
        }
    }
}

impl PathModifier {
    fn problem(&self) -> Option<String> {
        match self.modifier_type.as_str() {
            "ReplaceFullPath" if self.replace_full_path.is_none() => {
                Some("path type ReplaceFullPath needs replaceFullPath".into())
            }
            "ReplacePrefixMatch" if self.replace_prefix_match.is_none() => {
                Some("path type ReplacePrefixMatch needs replacePrefixMatch".into())
            }
            "ReplaceFullPath" | "ReplacePrefixMatch" => None,
            other => Some(format!("path modifier type {other:?} is not supported")),
        }
    }
}

impl RequestRedirect {
    fn problem(&self) -> Option<String> {
        if let Some(scheme) = self.scheme.as_deref().filter(|s| !matches!(*s, "http" | "https")) {
            return Some(format!("requestRedirect.scheme {scheme:?} is not http or https"));
        }
        if let Some(code) = self.status_code.filter(|c| ![301, 302, 303, 307, 308].contains(c)) {
            return Some(format!("requestRedirect.statusCode {code} is not a redirect status"));
        }
        self.path.as_ref().and_then(PathModifier::problem)
    }
}

/// Gateway API's bounds on a rule's backendRefs and filters; they also keep weighted cluster
/// sums far below what Envoy accepts.
pub const MAX_BACKEND_REFS: usize = 16;
pub const MAX_FILTERS: usize = 16;

/// The methods Gateway API's `HTTPMethod` allows.
pub const HTTP_METHODS: [&str; 9] =
    ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

impl HTTPRouteSpec {
    /// What is wrong with the route as Gateway API's schema defines it, each naming the field.
    /// Envoy rejects a whole RouteConfiguration for one bad header name, path or hostname, so
    /// a route with any of these is not accepted and its neighbours keep serving.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (r, rule) in self.rules.iter().enumerate() {
            let at = format!("rules[{r}]");
            if rule.backend_refs.len() > MAX_BACKEND_REFS {
                out.push(format!(
                    "{at} has {} backendRefs: at most {MAX_BACKEND_REFS}",
                    rule.backend_refs.len()
                ));
            }
            if rule.filters.len() > MAX_FILTERS {
                out.push(format!("{at} has {} filters: at most {MAX_FILTERS}", rule.filters.len()));
            }
            for (m, matched) in rule.matches.iter().enumerate() {
                let at = format!("{at}.matches[{m}]");
                if let Some(path) = &matched.path {
                    let ok = match path.match_type {
                        PathMatchType::RegularExpression => {
                            path.value.starts_with('/')
                                && printable(&path.value)
                                && regex(&path.value)
                        }
                        _ => path_value(&path.value),
                    };
                    if !ok {
                        out.push(format!("{at}.path.value {:?} is not a valid path", path.value));
                    }
                }
                for (kind, list) in
                    [("headers", &matched.headers), ("queryParams", &matched.query_params)]
                {
                    for (i, h) in list.iter().enumerate() {
                        if !token(&h.name) {
                            out.push(format!(
                                "{at}.{kind}[{i}].name {:?} is not a valid name",
                                h.name
                            ));
                        }
                        if !printable(&h.value) {
                            out.push(format!("{at}.{kind}[{i}].value has control characters"));
                        }
                        if h.match_type == HeaderMatchType::RegularExpression && !regex(&h.value) {
                            out.push(format!("{at}.{kind}[{i}].value is not a regular expression"));
                        }
                    }
                }
                if let Some(method) =
                    matched.method.as_deref().filter(|m| !HTTP_METHODS.contains(m))
                {
                    out.push(format!("{at}.method {method:?} is not one of {HTTP_METHODS:?}"));
                }
            }
            let backend_filters = rule.backend_refs.iter().enumerate().flat_map(|(b, backend)| {
                backend.filters.iter().map(move |f| (format!("backendRefs[{b}].filters"), f, true))
            });
            let filters = rule.filters.iter().map(|f| ("filters".to_string(), f, false));
            for (field, f, on_backend) in filters.chain(backend_filters) {
                let at = format!("{at}.{field}");
                if on_backend
                    && !matches!(
                        f.filter_type.as_str(),
                        REQUEST_HEADER_MODIFIER | RESPONSE_HEADER_MODIFIER
                    )
                {
                    out.push(format!(
                        "{at}: {} is not supported on a backendRef: aixds applies header modifiers there",
                        f.filter_type
                    ));
                }
                for m in
                    [&f.request_header_modifier, &f.response_header_modifier].into_iter().flatten()
                {
                    for h in m.set.iter().chain(&m.add) {
                        if !token(&h.name) || h.name.eq_ignore_ascii_case("host") {
                            out.push(format!("{at}: header {:?} cannot be set", h.name));
                        }
                        if !printable(&h.value) {
                            out.push(format!(
                                "{at}: the value of header {:?} has control characters",
                                h.name
                            ));
                        }
                    }
                    for name in &m.remove {
                        if !token(name) || name.eq_ignore_ascii_case("host") {
                            out.push(format!("{at}: header {name:?} cannot be removed"));
                        }
                    }
                }
                let hostname = f
                    .url_rewrite
                    .as_ref()
                    .and_then(|u| u.hostname.as_ref())
                    .or(f.request_redirect.as_ref().and_then(|r| r.hostname.as_ref()));
                if let Some(host) = hostname
                    && (host.starts_with('*') || super::validate_hostname(host).is_err())
                {
                    out.push(format!("{at}: hostname {host:?} is not a valid hostname"));
                }
                let path = f
                    .url_rewrite
                    .as_ref()
                    .and_then(|u| u.path.as_ref())
                    .or(f.request_redirect.as_ref().and_then(|r| r.path.as_ref()));
                let replacement = path
                    .and_then(|p| p.replace_full_path.as_ref().or(p.replace_prefix_match.as_ref()));
                if let Some(value) = replacement.filter(|v| !path_value(v)) {
                    out.push(format!("{at}: path {value:?} is not a valid path"));
                }
            }
        }
        out
    }
}

/// An HTTP token (RFC 9110), as Gateway API's header names are.
pub fn token(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Envoy refuses a regular expression whose RE2 program is larger than this (its default
/// `re2.max_program_size.error_level`), and with it the whole RouteConfiguration.
const MAX_REGEX_PROGRAM: usize = 100;

/// Whether Envoy's RE2 would take `pattern`, as far as Rust's regex syntax (close to RE2's, and
/// read with RE2's ASCII-only `\w`, `\d`, `\s`) can tell: it parses, and an estimate of its
/// RE2 program size (an instruction per literal byte and class range, repetitions unrolled as
/// RE2 unrolls them) is within Envoy's limit.
pub fn regex(pattern: &str) -> bool {
    let parsed =
        regex_syntax::ParserBuilder::new().unicode(false).utf8(false).build().parse(pattern);
    parsed.is_ok_and(|hir| program_size(&hir) <= MAX_REGEX_PROGRAM)
}

fn program_size(hir: &regex_syntax::hir::Hir) -> usize {
    use regex_syntax::hir::{Class, HirKind};
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => 1,
        HirKind::Literal(literal) => literal.0.len(),
        HirKind::Class(Class::Bytes(class)) => class.ranges().len(),
        HirKind::Class(Class::Unicode(class)) => class.ranges().len(),
        HirKind::Repetition(r) => {
            let sub = program_size(&r.sub);
            let copies = match r.max {
                Some(max) => max as usize,
                None => r.min as usize + 1,
            };
            sub.saturating_mul(copies.max(1)).saturating_add(copies)
        }
        HirKind::Capture(c) => program_size(&c.sub) + 2,
        HirKind::Concat(subs) => subs.iter().map(program_size).sum(),
        HirKind::Alternation(subs) => subs.iter().map(program_size).sum::<usize>() + subs.len(),
    }
}

/// Visible ASCII and spaces only.
fn printable(value: &str) -> bool {
    value.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// A path as Gateway API's schema allows one: starting with `/`, of unreserved, sub-delim, `:`,
/// `@`, `/` and percent-encoded characters.
fn path_value(value: &str) -> bool {
    value.starts_with('/')
        && value.len() <= 1024
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b))
}
