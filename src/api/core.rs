//! The core kinds aixds reads, reduced to the fields it uses: Secret data, Service ports, Pod
//! labels and address.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Secret values, base64-decoded. `Debug` never prints a value.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(try_from = "RawSecret")]
pub struct SecretData {
    pub values: BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.values.keys().map(|k| (k, "<redacted>"))).finish()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSecret {
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
        Ok(SecretData { values })
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

/// Why a Secret cannot serve as a listener's certificate (`tls.crt` and `tls.key` in PEM), if
/// it cannot. Never quotes the Secret's values.
pub fn tls_certificate_problem(secret: &SecretData) -> Option<String> {
    let pem = |key: &str, label: &str| {
        let value = secret.values.get(key)?;
        let text = std::str::from_utf8(value).ok()?;
        text.contains("-----BEGIN ").then_some(())?;
        text.contains(label).then_some(())
    };
    if pem("tls.crt", "CERTIFICATE-----").is_none() {
        return Some("has no PEM certificate under \"tls.crt\"".into());
    }
    if pem("tls.key", "PRIVATE KEY-----").is_none() {
        return Some("has no PEM private key under \"tls.key\"".into());
    }
    None
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
    fn base64_roundtrip_and_redaction() {
        let s: SecretData =
            serde_yaml::from_str("data: {apiKey: c2stc2VjcmV0}\nstringData: {b: x}").unwrap();
        assert_eq!(s.values["apiKey"], b"sk-secret");
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("sk-secret") && dbg.contains("<redacted>"), "{dbg}");
        assert!(serde_yaml::from_str::<SecretData>("data: {a: '*'}").is_err());
    }
}
