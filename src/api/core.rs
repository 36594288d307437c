//! The core kinds aixds reads, reduced to the fields it uses: Secret type and data (and the TLS
//! certificate a `kubernetes.io/tls` one holds), Service ports, Pod labels and address.

use std::collections::BTreeMap;
use std::fmt;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

/// The Secret type of a TLS certificate and its key (`tls.crt`, `tls.key`).
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// A Secret's type and values, base64-decoded. `Debug` never prints a value.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(try_from = "RawSecret")]
pub struct SecretData {
    /// `type`, `Opaque` when the manifest names none (as the API server defaults it).
    pub type_: String,
    pub values: BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values: BTreeMap<&String, &str> =
            self.values.keys().map(|k| (k, "<redacted>")).collect();
        f.debug_struct("SecretData").field("type", &self.type_).field("values", &values).finish()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSecret {
    #[serde(default, rename = "type")]
    type_: Option<String>,
    #[serde(default)]
    data: BTreeMap<String, String>,
    #[serde(default)]
    string_data: BTreeMap<String, String>,
}

impl TryFrom<RawSecret> for SecretData {
    type Error = String;
    fn try_from(raw: RawSecret) -> Result<Self, String> {
        let mut values = BTreeMap::new();
        for (k, v) in raw.data {
            let bytes = base64_decode(&v).ok_or_else(|| format!("data.{k} is not valid base64"))?;
            values.insert(k, bytes);
        }
        // As on the API server, stringData wins over data for the same key.
        for (k, v) in raw.string_data {
            values.insert(k, v.into_bytes());
        }
        let type_ = raw.type_.filter(|t| !t.is_empty()).unwrap_or_else(|| "Opaque".into());
        Ok(SecretData { type_, values })
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// The certificate chain's key in a `kubernetes.io/tls` Secret.
pub const TLS_CERT_KEY: &str = "tls.crt";
/// The private key's key in a `kubernetes.io/tls` Secret.
pub const TLS_KEY_KEY: &str = "tls.key";

/// A listener's certificate as a `kubernetes.io/tls` Secret holds it, parsed and checked: the
/// certificates of `tls.crt`, end-entity first, and the private key of `tls.key`, which
/// matches the first. `Debug` never prints the key.
pub struct TlsCertificate {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl fmt::Debug for TlsCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCertificate")
            .field("chain", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The certificate in `secret`, or why it holds none a listener can serve, phrased to follow
/// "Secret ns/name" and never quoting the Secret's values. Usable: type `kubernetes.io/tls`,
/// PEM X.509 v3 certificates under `tls.crt`, and under `tls.key` a PEM private key (PKCS#8,
/// PKCS#1 or SEC1; RSA of 2048 bits or more, ECDSA P-256 or P-384, or Ed25519) that matches the
/// first certificate. Checked with what Envoy will check, so that Envoy never refuses it.
pub fn tls_certificate(secret: &SecretData) -> Result<TlsCertificate, String> {
    if secret.type_ != TLS_SECRET_TYPE {
        return Err(format!("is of type {:?}, not {TLS_SECRET_TYPE}", secret.type_));
    }
    let value = |name: &str| secret.values.get(name).ok_or_else(|| format!("has no {name:?} key"));
    let (cert_pem, key_pem) = (value(TLS_CERT_KEY)?, value(TLS_KEY_KEY)?);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| format!("has a {TLS_CERT_KEY:?} that is not valid PEM"))?;
    if chain.is_empty() {
        return Err(format!("has no PEM certificate under {TLS_CERT_KEY:?}"));
    }
    for (i, cert) in chain.iter().enumerate() {
        ParsedCertificate::try_from(cert).map_err(|e| {
            format!("has a certificate {} under {TLS_CERT_KEY:?} that is not X.509 v3 ({e})", i + 1)
        })?;
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| {
        format!("has no PEM private key (PKCS#8, PKCS#1 or SEC1) under {TLS_KEY_KEY:?}")
    })?;
    let signing_key = any_supported_type(&key).map_err(|_| {
        format!(
            "has a key under {TLS_KEY_KEY:?} that is not usable (RSA of 2048 bits or more, ECDSA \
             P-256 or P-384, or Ed25519)"
        )
    })?;
    CertifiedKey::new(chain.clone(), signing_key).keys_match().map_err(|_| {
        format!("has a key under {TLS_KEY_KEY:?} that does not match its first certificate")
    })?;
    Ok(TlsCertificate { chain, key })
}

/// Why a Secret cannot serve as a listener's certificate (see [`tls_certificate`]), if it
/// cannot.
pub fn tls_certificate_problem(secret: &SecretData) -> Option<String> {
    tls_certificate(secret).err()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// `status.loadBalancer.ingress`: the IPs and host names a load balancer gave the Service.
    #[serde(skip)]
    pub ingress: Vec<ServiceIngress>,
}

/// One address a load balancer gave a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceIngress {
    Ip(String),
    Hostname(String),
}

/// A whole Service document, as far as aixds reads it: its spec, and the load balancer's
/// addresses from its status.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ServiceDocument {
    #[serde(default)]
    spec: Option<ServiceSpec>,
    #[serde(default)]
    status: Option<RawStatus>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawStatus {
    #[serde(default)]
    load_balancer: Option<RawLoadBalancer>,
}

#[derive(Deserialize, Default)]
struct RawLoadBalancer {
    #[serde(default)]
    ingress: Vec<RawIngress>,
}

#[derive(Deserialize)]
struct RawIngress {
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    hostname: Option<String>,
}

impl ServiceDocument {
    pub(super) fn into_spec(self) -> ServiceSpec {
        let mut spec = self.spec.unwrap_or_default();
        let ingress = self.status.and_then(|s| s.load_balancer).map(|lb| lb.ingress);
        spec.ingress = ingress
            .into_iter()
            .flatten()
            .filter_map(|i| match (i.ip, i.hostname) {
                (Some(ip), _) if !ip.is_empty() => Some(ServiceIngress::Ip(ip)),
                (_, Some(host)) if !host.is_empty() => Some(ServiceIngress::Hostname(host)),
                _ => None,
            })
            .collect();
        spec
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// `discovery.k8s.io/v1` `EndpointSlice`: some of a Service's endpoints, and the ports they
/// serve the Service's ports on.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSliceSpec {
    #[serde(default)]
    pub address_type: String,
    #[serde(default)]
    pub endpoints: Vec<SliceEndpoint>,
    #[serde(default)]
    pub ports: Vec<SlicePort>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct SliceEndpoint {
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub conditions: SliceConditions,
}

/// An endpoint's conditions; an unset `ready` means ready, as Kubernetes reads it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct SliceConditions {
    #[serde(default)]
    pub ready: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlicePort {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub app_protocol: Option<String>,
}

impl EndpointSliceSpec {
    /// The ready addresses, with the port the slice serves the Service port named `port_name`
    /// on (`""`: the Service's one unnamed port), and that port's `appProtocol`.
    pub fn ready(&self, port_name: &str) -> Option<(Vec<&str>, u16, Option<&str>)> {
        let port = self.ports.iter().find(|p| p.name.as_deref().unwrap_or("") == port_name)?;
        let addresses = self
            .endpoints
            .iter()
            .filter(|e| e.conditions.ready != Some(false))
            .flat_map(|e| &e.addresses)
            .map(String::as_str)
            .filter(|a| a.parse::<std::net::IpAddr>().is_ok())
            .collect();
        Some((addresses, port.port?, port.app_protocol.as_deref()))
    }
}

/// What the graph needs from a Pod: its address and whether it can take traffic.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "RawPod")]
pub struct PodInfo {
    pub ip: Option<String>,
    pub ready: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPod {
    #[serde(default)]
    status: Option<RawPodStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPodStatus {
    #[serde(default, rename = "podIP")]
    pod_ip: Option<String>,
    #[serde(default)]
    phase: Option<String>,
    #[serde(default)]
    conditions: Vec<RawPodCondition>,
}

#[derive(Deserialize)]
struct RawPodCondition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
}

impl From<RawPod> for PodInfo {
    fn from(raw: RawPod) -> Self {
        let Some(status) = raw.status else { return PodInfo::default() };
        // A pod written by hand in a manifest often has no conditions: count it ready unless it
        // says otherwise.
        let ready_condition = status.conditions.iter().find(|c| c.type_ == "Ready");
        let ready = match ready_condition {
            Some(c) => c.status == "True",
            None => status.phase.as_deref().is_none_or(|p| p == "Running"),
        };
        PodInfo { ip: status.pod_ip.filter(|ip| !ip.is_empty()), ready }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_keeps_its_load_balancer_addresses() {
        let doc = "spec: {clusterIP: 10.0.0.1, ports: [{port: 80}]}\n\
                   status: {loadBalancer: {ingress: [{ip: 192.0.2.1}, {hostname: lb.test}, {}]}}\n";
        let read = |doc| serde_norway::from_str::<ServiceDocument>(doc).unwrap().into_spec();
        let spec = read(doc);
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(
            spec.ingress,
            [ServiceIngress::Ip("192.0.2.1".into()), ServiceIngress::Hostname("lb.test".into())]
        );
        assert!(read("spec: {}\n").ingress.is_empty());
    }

    #[test]
    fn base64_roundtrip_and_redaction() {
        let s: SecretData =
            serde_norway::from_str("data: {apiKey: c2stc2VjcmV0}\nstringData: {b: x}").unwrap();
        assert_eq!(s.values["apiKey"], b"sk-secret");
        assert_eq!(s.type_, "Opaque");
        let tls: SecretData = serde_norway::from_str("type: kubernetes.io/tls").unwrap();
        assert_eq!(tls.type_, TLS_SECRET_TYPE);
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("sk-secret") && dbg.contains("<redacted>"), "{dbg}");
        assert!(serde_norway::from_str::<SecretData>("data: {a: '*'}").is_err());
    }
}
