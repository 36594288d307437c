//! The objects users write, as typed Rust values that know nothing of Envoy.
//!
//! Takes: one YAML/JSON document (from a manifest file or a Kubernetes watch).
//! Gives: an [`Object`] with a typed [`ObjectKey`], or a [`ParseOutcome::Skipped`] for kinds aixds
//! does not read, or an error naming the field that is wrong.
//!
//! Field names follow the upstream manifests (Envoy AI Gateway, Envoy Gateway, Gateway API and the
//! Gateway API Inference Extension) so existing YAML applies unchanged. Unknown fields are ignored,
//! as the Kubernetes API server prunes them, so newer upstream fields never break parsing.

mod ai_gateway_route;
mod ai_service_backend;
mod backend;
mod backend_security_policy;
mod backend_tls_policy;
mod core;
mod credential_files;
mod gateway;
mod http_route;
mod inference_pool;
mod quota_policy;
mod reference_grant;
mod refs;
mod traffic_policy;

pub use ai_gateway_route::*;
pub use ai_service_backend::*;
pub use backend::*;
pub use backend_security_policy::*;
pub use backend_tls_policy::*;
pub use core::*;
pub use credential_files::*;
pub use gateway::*;
pub use http_route::*;
pub use inference_pool::*;
pub use quota_policy::*;
pub use reference_grant::*;
pub use refs::*;
pub use traffic_policy::*;

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The kinds aixds reads. Group and kind together identify one; versions are accepted as listed in
/// [`Kind::from_api_version`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Kind {
    AIGatewayRoute,
    AIServiceBackend,
    BackendSecurityPolicy,
    Backend,
    BackendTLSPolicy,
    BackendTrafficPolicy,
    InferencePool,
    Gateway,
    GatewayClass,
    HTTPRoute,
    QuotaPolicy,
    ReferenceGrant,
    Secret,
    Service,
    Pod,
    EndpointSlice,
}

pub const AIGATEWAY_GROUP: &str = "aigateway.envoyproxy.io";
pub const ENVOY_GATEWAY_GROUP: &str = "gateway.envoyproxy.io";
pub const INFERENCE_GROUP: &str = "inference.networking.k8s.io";
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";
pub const DISCOVERY_GROUP: &str = "discovery.k8s.io";

impl Kind {
    pub const ALL: [Kind; 16] = [
        Kind::AIGatewayRoute,
        Kind::AIServiceBackend,
        Kind::BackendSecurityPolicy,
        Kind::Backend,
        Kind::BackendTLSPolicy,
        Kind::BackendTrafficPolicy,
        Kind::InferencePool,
        Kind::Gateway,
        Kind::GatewayClass,
        Kind::HTTPRoute,
        Kind::QuotaPolicy,
        Kind::ReferenceGrant,
        Kind::Secret,
        Kind::Service,
        Kind::Pod,
        Kind::EndpointSlice,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AIGatewayRoute => "AIGatewayRoute",
            Kind::AIServiceBackend => "AIServiceBackend",
            Kind::BackendSecurityPolicy => "BackendSecurityPolicy",
            Kind::Backend => "Backend",
            Kind::BackendTLSPolicy => "BackendTLSPolicy",
            Kind::BackendTrafficPolicy => "BackendTrafficPolicy",
            Kind::InferencePool => "InferencePool",
            Kind::Gateway => "Gateway",
            Kind::GatewayClass => "GatewayClass",
            Kind::HTTPRoute => "HTTPRoute",
            Kind::QuotaPolicy => "QuotaPolicy",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Secret => "Secret",
            Kind::Service => "Service",
            Kind::Pod => "Pod",
            Kind::EndpointSlice => "EndpointSlice",
        }
    }

    /// The API group ("" for core).
    pub fn group(self) -> &'static str {
        match self {
            Kind::AIGatewayRoute
            | Kind::AIServiceBackend
            | Kind::BackendSecurityPolicy
            | Kind::QuotaPolicy => AIGATEWAY_GROUP,
            Kind::Backend | Kind::BackendTrafficPolicy => ENVOY_GATEWAY_GROUP,
            Kind::InferencePool => INFERENCE_GROUP,
            Kind::Gateway
            | Kind::GatewayClass
            | Kind::HTTPRoute
            | Kind::BackendTLSPolicy
            | Kind::ReferenceGrant => GATEWAY_API_GROUP,
            Kind::Secret | Kind::Service | Kind::Pod => "",
            Kind::EndpointSlice => DISCOVERY_GROUP,
        }
    }

    pub fn namespaced(self) -> bool {
        self != Kind::GatewayClass
    }

    /// Resolves a document's `apiVersion` and `kind`. `None` means aixds does not read it.
    pub fn from_api_version(api_version: &str, kind: &str) -> Option<Kind> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let k = Kind::ALL.into_iter().find(|k| k.as_str() == kind && k.group() == group)?;
        k.versions().contains(&version).then_some(k)
    }

    /// The versions aixds reads, preferred first.
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Kind::AIGatewayRoute | Kind::AIServiceBackend | Kind::BackendSecurityPolicy => {
                &["v1beta1", "v1alpha1"]
            }
            Kind::Backend | Kind::BackendTrafficPolicy | Kind::QuotaPolicy => &["v1alpha1"],
            Kind::InferencePool => &["v1"],
            Kind::Gateway | Kind::GatewayClass | Kind::HTTPRoute | Kind::ReferenceGrant => {
                &["v1", "v1beta1"]
            }
            Kind::BackendTLSPolicy => &["v1", "v1alpha3"],
            Kind::Secret | Kind::Service | Kind::Pod | Kind::EndpointSlice => &["v1"],
        }
    }

    /// AIGatewayRoute and HTTPRoute: attached to Gateways by `parentRefs`, serving `hostnames`.
    pub fn is_route(self) -> bool {
        matches!(self, Kind::AIGatewayRoute | Kind::HTTPRoute)
    }

    /// Parses a kind name as used on the command line and in references (case-insensitive).
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of one object. Cluster-scoped kinds have an empty namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        let namespace = if kind.namespaced() { namespace.into() } else { String::new() };
        ObjectKey { kind, namespace, name: name.into() }
    }

    /// `{namespace}/{name}`, each part escaped so that no two keys of a kind give one path: `%`,
    /// `/` and every byte but ASCII letters, digits, `-`, `.` and `_` become `%XX`. Names the API
    /// server accepts need no escaping and read as written; the escaping keeps the Envoy names
    /// built from paths apart (and ASCII, as gRPC metadata and headers carry them) should an
    /// invalid name get this far.
    ///
    /// Every Envoy name made from objects is a fixed prefix, then such paths and numbers joined
    /// by `/`, so the prefix and the count of `/` tell the parts apart.
    pub fn path(&self) -> String {
        format!("{}/{}", escape(&self.namespace), escape(&self.name))
    }

    /// Checks the name and namespace as the Kubernetes API server does: a namespace is an
    /// RFC 1123 label, a Service's name an RFC 1035 label, every other name an RFC 1123
    /// subdomain.
    pub fn validate(&self) -> Result<(), String> {
        if self.kind.namespaced() {
            dns_label(&self.namespace, false).map_err(|e| {
                format!("metadata.namespace {:?} is not valid: {e}", self.namespace)
            })?;
        }
        let name = match self.kind {
            Kind::Service => dns_label(&self.name, true),
            _ => dns_subdomain(&self.name),
        };
        name.map_err(|e| format!("metadata.name {:?} is not valid: {e}", self.name))
    }

    /// Parses `Kind/namespace/name` (or `Kind/name` for cluster-scoped kinds).
    pub fn parse(s: &str) -> Option<ObjectKey> {
        let mut parts = s.splitn(3, '/');
        let kind = Kind::parse(parts.next()?)?;
        match (parts.next(), parts.next()) {
            (Some(ns), Some(name)) if kind.namespaced() => Some(ObjectKey::new(kind, ns, name)),
            (Some(name), None) if !kind.namespaced() => Some(ObjectKey::new(kind, "", name)),
            _ => None,
        }
    }
}

/// An RFC 1123 label (or with `letter_first`, an RFC 1035 label), as Kubernetes checks it.
fn dns_label(s: &str, letter_first: bool) -> Result<(), String> {
    let what = if letter_first { "an RFC 1035 label" } else { "an RFC 1123 label" };
    let first_ok = |b: u8| b.is_ascii_lowercase() || (!letter_first && b.is_ascii_digit());
    let bytes = s.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && first_ok(bytes[0])
        && bytes[bytes.len() - 1] != b'-';
    if ok {
        return Ok(());
    }
    let start = if letter_first { "a letter" } else { "a letter or digit" };
    Err(format!(
        "{what} has at most 63 lower case letters, digits or '-', and starts with {start} and \
         ends with a letter or digit"
    ))
}

/// An RFC 1123 subdomain, as Kubernetes checks it: dot-separated RFC 1123 labels, at most 253
/// characters in all.
fn dns_subdomain(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        });
    if ok {
        return Ok(());
    }
    Err("an RFC 1123 subdomain has at most 253 lower case letters, digits, '-' or '.', and \
         starts and ends with a letter or digit"
        .into())
}

/// A part of [`ObjectKey::path`].
fn escape(part: &str) -> std::borrow::Cow<'_, str> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
    if part.bytes().all(plain) {
        return part.into();
    }
    let mut out = String::with_capacity(part.len() + 8);
    for b in part.bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.into()
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

impl serde::Serialize for ObjectKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The typed content of an object.
#[derive(Debug, Clone)]
pub enum Spec {
    AIGatewayRoute(AIGatewayRouteSpec),
    AIServiceBackend(AIServiceBackendSpec),
    BackendSecurityPolicy(BackendSecurityPolicySpec),
    Backend(BackendSpec),
    BackendTLSPolicy(BackendTLSPolicySpec),
    BackendTrafficPolicy(BackendTrafficPolicySpec),
    InferencePool(InferencePoolSpec),
    Gateway(GatewaySpec),
    GatewayClass(GatewayClassSpec),
    HTTPRoute(HTTPRouteSpec),
    QuotaPolicy(QuotaPolicySpec),
    ReferenceGrant(ReferenceGrantSpec),
    Secret(SecretData),
    Service(ServiceSpec),
    Pod(PodInfo),
    EndpointSlice(EndpointSliceSpec),
}

impl Spec {
    /// A route's `parentRefs` and `hostnames`; `None` for kinds that are not routes.
    pub fn route(&self) -> Option<(&[ParentReference], &[String])> {
        match self {
            Spec::AIGatewayRoute(r) => Some((&r.parent_refs, &r.hostnames)),
            Spec::HTTPRoute(r) => Some((&r.parent_refs, &r.hostnames)),
            _ => None,
        }
    }
}

/// One object as the graph holds it.
#[derive(Debug, Clone)]
pub struct Object {
    pub key: ObjectKey,
    pub generation: i64,
    pub labels: std::collections::BTreeMap<String, String>,
    pub annotations: std::collections::BTreeMap<String, String>,
    pub spec: Spec,
    /// Hash of the document's canonical JSON: equal hashes mean identical definitions.
    pub content_hash: u64,
}

/// What parsing one document gave.
#[derive(Debug)]
pub enum ParseOutcome {
    Object(Box<Object>),
    /// A kind aixds does not read: `apiVersion`, `kind`, `namespace/name`.
    Skipped {
        api_version: String,
        kind: String,
        name: String,
    },
    /// A document with no content (only comments, or an empty `---`).
    Empty,
}

/// Why a document could not be turned into an object.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{message}")]
    Invalid { message: String, line: Option<usize> },
}

impl ParseError {
    /// The 1-based line within the document, when the parser knows it.
    pub fn line(&self) -> Option<usize> {
        match self {
            ParseError::Invalid { line, .. } => *line,
        }
    }
}

impl From<serde_norway::Error> for ParseError {
    fn from(e: serde_norway::Error) -> Self {
        let line = e.location().map(|l| l.line());
        let message = e.to_string();
        // serde_norway appends " at line L column C"; the caller reports the line itself.
        let message = match message.find(" at line ") {
            Some(i) => message[..i].to_string(),
            None => message,
        };
        ParseError::Invalid { message, line }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<ObjectMeta>,
}

/// The namespace an object gets when its manifest names none, as `kubectl apply` would do.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Parses one YAML document: the text once, into a value, which the object's parts are read
/// from.
pub fn parse_document(doc: &str) -> Result<ParseOutcome, ParseError> {
    refuse_deep_flow(doc)?;
    let value: serde_norway::Value = serde_norway::from_str(doc)?;
    if value.is_null() {
        return Ok(ParseOutcome::Empty);
    }
    let meta: TypeMeta = typed(doc, &value)?;
    let (Some(api_version), Some(kind_name)) = (meta.api_version, meta.kind) else {
        return Err(ParseError::Invalid {
            message: "document has no apiVersion and kind".into(),
            line: Some(1),
        });
    };
    let metadata = meta.metadata.unwrap_or_default();
    let Some(kind) = Kind::from_api_version(&api_version, &kind_name) else {
        let name = match &metadata.namespace {
            Some(ns) => format!("{ns}/{}", metadata.name.clone().unwrap_or_default()),
            None => metadata.name.clone().unwrap_or_default(),
        };
        return Ok(ParseOutcome::Skipped { api_version, kind: kind_name, name });
    };
    let Some(name) = metadata.name.filter(|n| !n.is_empty()) else {
        return Err(ParseError::Invalid {
            message: format!("{kind_name} has no metadata.name"),
            line: Some(1),
        });
    };
    let namespace = metadata.namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let spec = parse_spec(kind, doc, &value)?;
    let json = serde_json::to_vec(&value).unwrap_or_default();
    Ok(ParseOutcome::Object(Box::new(Object {
        key: ObjectKey::new(kind, namespace, name),
        generation: metadata.generation.unwrap_or(1),
        labels: metadata.labels.unwrap_or_default(),
        annotations: metadata.annotations.unwrap_or_default(),
        spec,
        content_hash: hash_bytes(&json),
    })))
}

/// Flow collections (`[`, `{`) nested deeper than this are refused before parsing. The parser
/// refuses anything past 128 levels itself, but its scanner takes time quadratic in the depth
/// first (a 400 KB document 200k levels deep held the batch for over a minute).
const MAX_FLOW_DEPTH: usize = 512;

/// Refuses a document whose flow collections nest past [`MAX_FLOW_DEPTH`], by counting brackets
/// outside quoted scalars and comments. A bracket inside a plain or block scalar counts too, so
/// the bound is set well past what the parser accepts.
fn refuse_deep_flow(doc: &str) -> Result<(), ParseError> {
    let (mut depth, mut line) = (0usize, 1usize);
    let mut chars = doc.chars().peekable();
    let mut previous = '\n';
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            '#' if previous.is_whitespace() => while chars.next_if(|c| *c != '\n').is_some() {},
            // A quote opens a quoted scalar only where a scalar starts (`it's` is plain).
            '"' | '\'' if previous.is_whitespace() || "[{,:".contains(previous) => {
                while let Some(q) = chars.next() {
                    match q {
                        '\n' => line += 1,
                        '\\' if c == '"' => _ = chars.next(),
                        q if q == c => break,
                        _ => {}
                    }
                }
            }
            '[' | '{' => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    let message = format!("collections nested deeper than {MAX_FLOW_DEPTH} levels");
                    return Err(ParseError::Invalid { message, line: Some(line) });
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = c;
    }
    Ok(())
}

/// `T` from a document's parsed `value`. A value carries no positions: on an error the text is
/// read again, for the error's line.
fn typed<T: DeserializeOwned>(doc: &str, value: &serde_norway::Value) -> Result<T, ParseError> {
    match T::deserialize(value) {
        Ok(t) => Ok(t),
        Err(_) => Ok(serde_norway::from_str(doc)?),
    }
}

fn parse_spec(kind: Kind, doc: &str, value: &serde_norway::Value) -> Result<Spec, ParseError> {
    #[derive(Deserialize)]
    struct WithSpec<T> {
        #[serde(default = "Option::default")]
        spec: Option<T>,
    }
    fn spec_of<T: DeserializeOwned + Default>(
        doc: &str,
        value: &serde_norway::Value,
    ) -> Result<T, ParseError> {
        let w: WithSpec<T> = typed(doc, value)?;
        Ok(w.spec.unwrap_or_default())
    }
    let (d, v) = (doc, value);
    Ok(match kind {
        Kind::AIGatewayRoute => Spec::AIGatewayRoute(spec_of(d, v)?),
        Kind::AIServiceBackend => Spec::AIServiceBackend(spec_of(d, v)?),
        Kind::BackendSecurityPolicy => Spec::BackendSecurityPolicy(spec_of(d, v)?),
        Kind::Backend => Spec::Backend(spec_of(d, v)?),
        Kind::BackendTLSPolicy => Spec::BackendTLSPolicy(spec_of(d, v)?),
        Kind::BackendTrafficPolicy => Spec::BackendTrafficPolicy(spec_of(d, v)?),
        Kind::InferencePool => Spec::InferencePool(spec_of(d, v)?),
        Kind::Gateway => Spec::Gateway(spec_of(d, v)?),
        Kind::GatewayClass => Spec::GatewayClass(spec_of(d, v)?),
        Kind::HTTPRoute => Spec::HTTPRoute(spec_of(d, v)?),
        Kind::QuotaPolicy => Spec::QuotaPolicy(spec_of(d, v)?),
        Kind::ReferenceGrant => Spec::ReferenceGrant(spec_of(d, v)?),
        Kind::Service => Spec::Service(typed::<core::ServiceDocument>(d, v)?.into_spec()),
        Kind::Secret => Spec::Secret(typed(d, v)?),
        Kind::Pod => Spec::Pod(typed(d, v)?),
        Kind::EndpointSlice => Spec::EndpointSlice(typed(d, v)?),
    })
}

/// A stable 64-bit FNV-1a hash: the same bytes give the same hash in every build and process.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collections_nested_past_the_bound_are_refused_before_parsing() {
        let head = "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\n\
                    metadata: {name: deep}\n";
        let nested =
            |n: usize| format!("{head}spec: {{rules: {}{}}}\n", "[".repeat(n), "]".repeat(n));
        let refused = |doc: &str| match parse_document(doc) {
            Err(e) => (e.to_string(), e.line()),
            Ok(_) => panic!("parsed"),
        };
        // Past the bound, however deep: refused with the line, without the parser's quadratic
        // scan (20k levels took it almost a second).
        for n in [MAX_FLOW_DEPTH, 20_000, 200_000] {
            let (message, line) = refused(&nested(n));
            assert_eq!(line, Some(4), "{message}");
            assert!(message.contains("nested deeper than 512 levels"), "{n}: {message}");
        }
        // Brackets in quoted scalars and comments do not count; a quote inside a plain scalar
        // opens nothing, so it cannot hide what follows.
        let quoted =
            format!("{head}spec: {{rules: []}}\nx: '{0}'\ny: \"{0}\" # {0}\n", "[".repeat(2000));
        assert!(matches!(parse_document(&quoted), Ok(ParseOutcome::Object(_))));
        let hidden = format!("{head}x: it's\nspec: {{rules: {}}}\n", "[".repeat(1000));
        assert!(refused(&hidden).0.contains("nested deeper"));
        // Within the bound, the parser's own limit answers.
        assert!(refused(&nested(200)).0.contains("recursion limit"));
    }

    #[test]
    fn names_are_checked_per_kind_as_the_api_server_does() {
        let ok = |kind, ns: &str, name: &str| ObjectKey::new(kind, ns, name).validate();
        assert_eq!(ok(Kind::AIServiceBackend, "default", "a.b-1"), Ok(()));
        assert_eq!(ok(Kind::GatewayClass, "", "aixds"), Ok(()), "cluster-scoped: no namespace");
        assert_eq!(ok(Kind::Service, "default", "epp-1"), Ok(()));
        for (kind, ns, name) in [
            (Kind::AIServiceBackend, "default", "x/y"),
            (Kind::AIServiceBackend, "default/x", "y"),
            (Kind::AIServiceBackend, "default", "модель"),
            (Kind::AIServiceBackend, "default", "Upper"),
            (Kind::AIServiceBackend, "default", "-a"),
            (Kind::AIServiceBackend, "default", "a..b"),
            (Kind::AIServiceBackend, "a.b", "ok"),
            (Kind::AIServiceBackend, &"n".repeat(64), "ok"),
            (Kind::Secret, "default", &"n".repeat(254)),
            (Kind::Service, "default", "9svc"),
            (Kind::Service, "default", "a.b"),
        ] {
            assert!(ok(kind, ns, name).is_err(), "{kind} {ns:?} {name:?}");
        }
    }

    #[test]
    fn paths_tell_every_key_apart() {
        let path = |ns: &str, name: &str| ObjectKey::new(Kind::Backend, ns, name).path();
        assert_eq!(path("default", "a.b-c_d"), "default/a.b-c_d", "valid names read as written");
        assert_ne!(path("default", "x/y"), path("default/x", "y"));
        assert_eq!(path("default", "x/y"), "default/x%2Fy");
        assert_ne!(path("a", "%2F"), path("a", "/"));
        assert!(path("default", "модель").is_ascii());
    }

    #[test]
    fn api_keys_are_checked_without_quoting_them() {
        let secret = |value: &[u8]| SecretData {
            values: [(API_KEY_SECRET_KEY.to_string(), value.to_vec())].into(),
            ..Default::default()
        };
        assert_eq!(api_key(&secret(b"sk-1\n")), Ok("sk-1"));
        for bad in [&b""[..], b" \n", b"sk-\x01", b"sk\xff", b"sk-\xd0\xbc"] {
            let err = api_key(&secret(bad)).unwrap_err();
            assert!(!err.contains("sk"), "{err}");
        }
        assert_eq!(api_key(&SecretData::default()), Err(r#"has no "apiKey" key"#.into()));
    }
}
