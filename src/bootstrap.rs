//! The Envoy bootstrap that points an Envoy at aixds: ADS over gRPC (delta by default,
//! state-of-the-world with `sotw`), clusters and listeners from ADS, an admin listener.

use serde_json::json;

#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    /// Where aixds serves xDS and the ext_proc: `host:port` (an IP or a DNS name such as a
    /// Service), or several comma-separated replicas.
    pub xds_address: String,
    pub node_id: String,
    pub node_cluster: String,
    /// Envoy's own admin listener (loopback).
    pub admin_address: String,
    pub admin_port: u16,
    pub sotw: bool,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        BootstrapOptions {
            xds_address: "127.0.0.1:18000".into(),
            node_id: "envoy".into(),
            node_cluster: "aixds".into(),
            admin_address: "127.0.0.1".into(),
            admin_port: 9901,
            sotw: false,
        }
    }
}

/// The name of the bootstrap's static cluster that reaches aixds.
pub const XDS_CLUSTER: &str = "aixds-xds";

/// Why a bootstrap cannot be made.
#[derive(Debug, thiserror::Error)]
#[error("xDS address {0:?} is not host:port")]
pub struct AddressError(String);

/// The bootstrap as JSON (Envoy reads JSON and YAML alike).
pub fn bootstrap(opts: &BootstrapOptions) -> Result<serde_json::Value, AddressError> {
    let addresses = opts
        .xds_address
        .split(',')
        .map(|a| {
            a.trim()
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
                .filter(|(h, _)| !h.is_empty())
                .ok_or_else(|| AddressError(a.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let all_ips = addresses.iter().all(|(h, _)| h.parse::<std::net::IpAddr>().is_ok());
    let discovery = if all_ips { "STATIC" } else { "STRICT_DNS" };
    let endpoints: Vec<serde_json::Value> = addresses
        .iter()
        .map(|(host, port)| {
            json!({ "endpoint": { "address": { "socket_address": {
                "address": host, "port_value": port } } } })
        })
        .collect();
    let ads = json!({ "ads": {}, "resource_api_version": "V3" });
    Ok(json!({
        "node": { "id": opts.node_id, "cluster": opts.node_cluster },
        "admin": { "address": { "socket_address": {
            "address": opts.admin_address, "port_value": opts.admin_port } } },
        "dynamic_resources": {
            "ads_config": {
                "api_type": if opts.sotw { "GRPC" } else { "DELTA_GRPC" },
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{ "envoy_grpc": { "cluster_name": XDS_CLUSTER } }],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": { "clusters": [{
            "name": XDS_CLUSTER,
            "type": discovery,
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": { "http2_protocol_options": {
                        // Envoy keeps the ADS stream alive through idle periods.
                        "connection_keepalive": { "interval": "30s", "timeout": "5s" } } }
                }
            },
            "load_assignment": {
                "cluster_name": XDS_CLUSTER,
                "endpoints": [{ "lb_endpoints": endpoints }]
            },
            // Several aixds replicas serve xDS and the translation ext_proc alike: a replica that
            // stops answering leaves the rotation within a second, so requests keep being
            // translated by the others.
            "health_checks": [{
                "timeout": "1s", "interval": "1s", "no_traffic_interval": "1s",
                "unhealthy_threshold": 1, "healthy_threshold": 1, "tcp_health_check": {} }]
        }] },
        // A connection limit, so that Envoy does not warn that it has none.
        "overload_manager": { "resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                "max_active_downstream_connections": 50000 } }] }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_by_default_and_dns_for_names() {
        let b = bootstrap(&BootstrapOptions::default()).unwrap();
        assert_eq!(b["dynamic_resources"]["ads_config"]["api_type"], "DELTA_GRPC");
        assert_eq!(b["static_resources"]["clusters"][0]["type"], "STATIC");
        let opts = BootstrapOptions {
            xds_address: "aixds.aixds-system.svc:18000".into(),
            sotw: true,
            ..Default::default()
        };
        let b = bootstrap(&opts).unwrap();
        assert_eq!(b["dynamic_resources"]["ads_config"]["api_type"], "GRPC");
        assert_eq!(b["static_resources"]["clusters"][0]["type"], "STRICT_DNS");
        let bad = BootstrapOptions { xds_address: "nope".into(), ..Default::default() };
        assert!(bootstrap(&bad).is_err());
    }
}
