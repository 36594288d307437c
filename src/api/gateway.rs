//! Gateway API `Gateway` and `GatewayClass`: where Envoy listens, and which Gateways are aixds's
//! to program.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "gateway.networking.k8s.io", version = "v1", kind = "Gateway", namespaced)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    #[serde(default)]
    pub gateway_class_name: String,
    #[serde(default)]
    pub listeners: Vec<Listener>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub port: u16,
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_routes: Option<AllowedRoutes>,
}

/// A listener's TLS settings. aixds terminates TLS (`mode: Terminate`, the default) with the
/// certificates of `kubernetes.io/tls` Secrets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenerTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificate_refs: Vec<CertificateRef>,
}

/// A listener's reference to a certificate: a core `Secret` unless group and kind say otherwise.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Which routes may attach to a listener.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedRoutes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<RouteNamespaces>,
    /// Empty: the kinds the listener's protocol supports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<RouteGroupKind>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteNamespaces {
    /// `Same` (the default), `All` or `Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteGroupKind {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub kind: String,
}

#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "gateway.networking.k8s.io", version = "v1", kind = "GatewayClass")]
#[serde(rename_all = "camelCase")]
pub struct GatewayClassSpec {
    #[serde(default)]
    pub controller_name: String,
}

/// Gateway API's largest number of listeners on a Gateway.
pub const MAX_LISTENERS: usize = 64;
/// Gateway API's largest number of certificateRefs on a listener.
pub const MAX_CERTIFICATE_REFS: usize = 64;
/// Gateway API's largest number of hostnames on a route.
pub const MAX_ROUTE_HOSTNAMES: usize = 16;

/// The controller name aixds claims GatewayClasses by in a cluster, unless told another.
pub const DEFAULT_CONTROLLER_NAME: &str = "aixds.io/gateway-controller";

impl GatewaySpec {
    /// Problems of the Gateway as a whole; each listener is checked on its own (see
    /// `graph::listeners`), so that one bad listener leaves the rest serving.
    pub fn validate(&self) -> Result<(), String> {
        // Gateway API's own bounds, which the API server enforces and files may not: past them a
        // Gateway would cost the compiler quadratic work and Envoy a listener of that size.
        if self.listeners.len() > MAX_LISTENERS {
            return Err(format!(
                "{} listeners: Gateway API allows at most {MAX_LISTENERS}",
                self.listeners.len()
            ));
        }
        for (i, l) in self.listeners.iter().enumerate() {
            let refs = l.tls.as_ref().map_or(0, |t| t.certificate_refs.len());
            if refs > MAX_CERTIFICATE_REFS {
                return Err(format!(
                    "listeners[{i}]: {refs} certificateRefs: Gateway API allows at most \
                     {MAX_CERTIFICATE_REFS}"
                ));
            }
            if self.listeners[..i].iter().any(|o| o.name == l.name) {
                return Err(format!("listeners[{i}]: the name {:?} is used twice", l.name));
            }
        }
        Ok(())
    }
}

/// Checks a hostname as Gateway API does: an RFC 1123 subdomain of lower-case labels, which may
/// start with a `*.` wildcard label, and not an IP address.
pub fn validate_hostname(host: &str) -> Result<(), String> {
    let rest = host.strip_prefix("*.").unwrap_or(host);
    let labels_ok = !rest.is_empty()
        && host.len() <= 253
        && rest.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        });
    if !labels_ok {
        return Err(format!(
            "hostname {host:?} is not a lower-case RFC 1123 subdomain (optionally starting with \
             \"*.\")"
        ));
    }
    if rest.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(format!("hostname {host:?} is an IP address"));
    }
    Ok(())
}

/// Where a listener's and a route's hostnames meet, as Gateway API defines it: the more specific
/// of the two when one covers the other (`*.example.com` covers `a.example.com` and
/// `*.a.example.com`, not `example.com`), `None` when neither does.
pub fn hostname_intersection<'a>(a: &'a str, b: &'a str) -> Option<&'a str> {
    if a == b || covers(b, a) {
        Some(a)
    } else if covers(a, b) {
        Some(b)
    } else {
        None
    }
}

/// Whether the wildcard `pattern` (`*.suffix`) covers `host` (itself perhaps a wildcard). The
/// suffix starts with a dot, so labels are matched whole.
fn covers(pattern: &str, host: &str) -> bool {
    pattern
        .strip_prefix('*')
        .is_some_and(|suffix| host.len() > suffix.len() && host.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_meet_as_gateway_api_says() {
        let meet = |a, b| hostname_intersection(a, b);
        assert_eq!(meet("a.example.com", "a.example.com"), Some("a.example.com"));
        assert_eq!(meet("*.example.com", "a.example.com"), Some("a.example.com"));
        assert_eq!(meet("a.example.com", "*.example.com"), Some("a.example.com"));
        assert_eq!(meet("*.example.com", "a.b.example.com"), Some("a.b.example.com"));
        assert_eq!(meet("*.example.com", "*.a.example.com"), Some("*.a.example.com"));
        assert_eq!(meet("*.com", "*.example.com"), Some("*.example.com"));
        assert_eq!(meet("*.example.com", "example.com"), None);
        assert_eq!(meet("a.example.com", "b.example.com"), None);
        assert_eq!(meet("*.example.com", "*.example.org"), None);
        assert_eq!(meet("*.ample.com", "a.example.com"), None, "a label is matched whole");
    }

    #[test]
    fn gateways_past_gateway_apis_bounds_are_refused() {
        let listener = |i: usize| Listener {
            name: format!("l{i}"),
            port: 8000 + i as u16,
            protocol: "HTTP".into(),
            ..Default::default()
        };
        let mut spec =
            GatewaySpec { listeners: (0..64).map(listener).collect(), ..Default::default() };
        assert_eq!(spec.validate(), Ok(()));
        spec.listeners.push(listener(64));
        assert!(spec.validate().unwrap_err().contains("at most 64"));
        let refs = vec![CertificateRef { name: "c".into(), ..Default::default() }; 65];
        let tls = ListenerTls { certificate_refs: refs, ..Default::default() };
        let spec = GatewaySpec {
            listeners: vec![Listener { tls: Some(tls), ..listener(0) }],
            ..Default::default()
        };
        assert!(spec.validate().unwrap_err().contains("65 certificateRefs"));
    }

    #[test]
    fn hostnames_are_checked() {
        for ok in ["a.example.com", "*.example.com", "localhost", "x-1.y"] {
            assert_eq!(validate_hostname(ok), Ok(()), "{ok}");
        }
        for bad in ["", "*", "*.", "A.example.com", "a..b", "a.*.com", "-a.b", "1.2.3.4", "a b"] {
            assert!(validate_hostname(bad).is_err(), "{bad:?}");
        }
    }
}
