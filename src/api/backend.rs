//! `gateway.envoyproxy.io` `Backend`: where an AIServiceBackend's traffic goes.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "gateway.envoyproxy.io", version = "v1alpha1", kind = "Backend", namespaced)]
#[serde(rename_all = "camelCase")]
pub struct BackendSpec {
    #[serde(default)]
    pub endpoints: Vec<BackendEndpoint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub app_protocols: Vec<String>,
}

/// Exactly one of `fqdn`, `ip` or `unix` is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendEndpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fqdn: Option<FQDNEndpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IPEndpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix: Option<UnixSocket>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FQDNEndpoint {
    pub hostname: String,
    pub port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IPEndpoint {
    pub address: String,
    pub port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UnixSocket {
    pub path: String,
}

impl BackendSpec {
    /// Checks what the API server's schema cannot: one address kind per endpoint, and no mix of
    /// DNS names with IPs (Envoy needs one discovery type per cluster).
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err("spec.endpoints is empty".into());
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            let set = [e.fqdn.is_some(), e.ip.is_some(), e.unix.is_some()];
            if set.iter().filter(|s| **s).count() != 1 {
                return Err(format!("spec.endpoints[{i}] must set exactly one of fqdn, ip, unix"));
            }
            if let Some(ip) = &e.ip
                && ip.address.parse::<std::net::IpAddr>().is_err()
            {
                return Err(format!(
                    "spec.endpoints[{i}].ip.address {:?} is not an IP address",
                    ip.address
                ));
            }
        }
        let fqdn = self.endpoints.iter().filter(|e| e.fqdn.is_some()).count();
        if fqdn > 0 && fqdn != self.endpoints.len() {
            return Err("spec.endpoints mixes fqdn with ip/unix endpoints".into());
        }
        Ok(())
    }
}
