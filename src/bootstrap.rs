//! The Envoy bootstrap that points an Envoy at aixds: ADS over gRPC (delta by default,
//! state-of-the-world with `sotw`), clusters and listeners from ADS, an admin listener.
//!
//! The `aixds-xds` cluster reaches aixds by IP (STATIC), by DNS name (STRICT_DNS: every
//! address the name resolves to is a replica, e.g. a headless Service in a cluster), or over a
//! Unix socket (`unix:PATH`, `unix:@NAME` in the abstract namespace: how `aixds run` talks to
//! its own Envoy), in clear text or over TLS ([`UpstreamTls`]); the translation ext_proc the
//! compiled config calls goes through the same cluster.
//!
//! Replicas come and go without losing requests: Envoy checks each one's gRPC health every
//! second (a stopping replica answers NOT_SERVING while it still serves, so new streams move
//! away before it stops), and outlier detection ejects a replica whose connections fail (one
//! that crashed) before the next check.

use serde_json::json;

#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    /// Where aixds serves xDS and the ext_proc: `host:port` (an IP or a DNS name such as a
    /// Service), several comma-separated replicas, or `unix:PATH` (`unix:@NAME`: abstract).
    pub xds_address: String,
    pub node_id: String,
    pub node_cluster: String,
    /// Envoy's own admin listener (loopback).
    pub admin_address: String,
    pub admin_port: u16,
    pub sotw: bool,
    /// TLS to aixds; `None` is clear text.
    pub tls: Option<UpstreamTls>,
}

/// How Envoy reaches aixds over TLS. Paths are in Envoy's filesystem (e.g. a mounted Secret),
/// read by Envoy when it starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The CA certificates (PEM) aixds's serving certificate must chain to.
    pub ca: String,
    /// Envoy's client certificate and key (PEM), for an aixds that requires one.
    pub client_cert: Option<ClientCert>,
    /// The name aixds's certificate must carry, also sent as SNI. Without it, the certificate
    /// must carry the host of an xDS address (a DNS name, or an IP address as an IP SAN).
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: String,
    pub key: String,
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
            tls: None,
        }
    }
}

/// The name of the bootstrap's static cluster that reaches aixds.
pub const XDS_CLUSTER: &str = "aixds-xds";

/// Why a bootstrap cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("xDS address {0:?} is not host:port (or unix:PATH)")]
    NotHostPort(String),
    #[error("xDS address {0:?} is a Unix socket, which takes no TLS")]
    UnixWithTls(String),
}

/// The bootstrap as JSON (Envoy reads JSON and YAML alike).
pub fn bootstrap(opts: &BootstrapOptions) -> Result<serde_json::Value, AddressError> {
    if let Some(path) = opts.xds_address.strip_prefix("unix:") {
        if opts.tls.is_some() {
            return Err(AddressError::UnixWithTls(opts.xds_address.clone()));
        }
        let endpoint = json!({ "endpoint": { "address": { "pipe": { "path": path } } } });
        return Ok(document(opts, xds_cluster("STATIC", vec![endpoint])));
    }
    let addresses = opts
        .xds_address
        .split(',')
        .map(|a| {
            a.trim()
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
                .filter(|(h, _)| !h.is_empty())
                .ok_or_else(|| AddressError::NotHostPort(a.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let all_ips = addresses.iter().all(|(h, _)| h.parse::<std::net::IpAddr>().is_ok());
    let discovery = if all_ips { "STATIC" } else { "STRICT_DNS" };
    let mut cluster = xds_cluster(discovery, endpoints(&addresses));
    if let Some(tls) = &opts.tls {
        cluster["transport_socket"] = transport_socket(tls, &addresses);
    }
    Ok(document(opts, cluster))
}

/// The `aixds-xds` cluster: HTTP/2 to every replica, health checked over gRPC.
fn xds_cluster(discovery: &str, endpoints: Vec<serde_json::Value>) -> serde_json::Value {
    json!({
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
        // Several aixds replicas serve xDS and the translation ext_proc alike. A replica that
        // is stopping answers NOT_SERVING while it still serves, and leaves the rotation at
        // the next check; one that stops answering leaves it within a second.
        "health_checks": [{
            "timeout": "1s", "interval": "1s", "no_traffic_interval": "1s",
            "unhealthy_threshold": 1, "healthy_threshold": 1,
            "grpc_health_check": {} }],
        // A replica that crashed refuses connections: ejected at the first failure, rather
        // than at the next health check.
        "outlier_detection": {
            "split_external_local_origin_errors": true,
            "consecutive_local_origin_failure": 1,
            "enforcing_consecutive_local_origin_failure": 100,
            "interval": "1s", "base_ejection_time": "5s", "max_ejection_percent": 100 }
    })
}

/// The whole bootstrap around the `aixds-xds` cluster.
fn document(opts: &BootstrapOptions, cluster: serde_json::Value) -> serde_json::Value {
    let ads = json!({ "ads": {}, "resource_api_version": "V3" });
    json!({
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
        "static_resources": { "clusters": [cluster] },
        // Flow control between an ext_proc's gRPC stream and the request crashes Envoy 1.40
        // (SIGSEGV) when a few large buffered bodies are in flight to aixds at once; off, a
        // burst of them is served. The buffered body is held whole either way, within the
        // listener's buffer limit.
        "layered_runtime": { "layers": [{ "name": "aixds", "static_layer": {
            "envoy.reloadable_features.grpc_side_stream_flow_control": false } }] },
        // A connection limit, so that Envoy does not warn that it has none.
        "overload_manager": { "resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                "max_active_downstream_connections": 50000 } }] }
    })
}

fn endpoints(addresses: &[(&str, u16)]) -> Vec<serde_json::Value> {
    addresses
        .iter()
        .map(|(host, port)| {
            json!({ "endpoint": { "address": { "socket_address": {
                "address": host, "port_value": port } } } })
        })
        .collect()
}

/// An UpstreamTlsContext that trusts `tls.ca` and checks the name aixds's certificate carries:
/// `tls.server_name`, else each distinct host of the addresses.
fn transport_socket(tls: &UpstreamTls, addresses: &[(&str, u16)]) -> serde_json::Value {
    let mut hosts: Vec<&str> = match &tls.server_name {
        Some(name) => vec![name.as_str()],
        None => addresses.iter().map(|(h, _)| *h).collect(),
    };
    hosts.sort_unstable();
    hosts.dedup();
    let sans: Vec<serde_json::Value> = hosts
        .iter()
        .map(|h| {
            let san_type = if h.parse::<std::net::IpAddr>().is_ok() { "IP_ADDRESS" } else { "DNS" };
            json!({ "san_type": san_type, "matcher": { "exact": h } })
        })
        .collect();
    let mut common = json!({
        // tonic's server offers h2 only.
        "alpn_protocols": ["h2"],
        "validation_context": {
            "trusted_ca": { "filename": tls.ca },
            "match_typed_subject_alt_names": sans,
        }
    });
    if let Some(client) = &tls.client_cert {
        common["tls_certificates"] = json!([{
            "certificate_chain": { "filename": client.cert },
            "private_key": { "filename": client.key } }]);
    }
    let mut context = json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": common,
    });
    // SNI names one server; with several names (replicas by IP) there is none to send.
    if let [host] = hosts[..]
        && host.parse::<std::net::IpAddr>().is_err()
    {
        context["sni"] = json!(host);
    }
    json!({ "name": "envoy.transport_sockets.tls", "typed_config": context })
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

    #[test]
    fn a_unix_socket_is_a_pipe_address_without_tls() {
        let opts = BootstrapOptions { xds_address: "unix:@aixds-1".into(), ..Default::default() };
        let b = bootstrap(&opts).unwrap();
        let cluster = &b["static_resources"]["clusters"][0];
        assert_eq!(
            cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"],
            json!({ "pipe": { "path": "@aixds-1" } })
        );
        assert_eq!(cluster["health_checks"][0]["grpc_health_check"], json!({}));
        let tls = UpstreamTls { ca: "/ca.crt".into(), ..Default::default() };
        let with_tls = BootstrapOptions { tls: Some(tls), ..opts };
        assert!(matches!(bootstrap(&with_tls), Err(AddressError::UnixWithTls(_))));
    }

    fn tls_context(opts: &BootstrapOptions) -> serde_json::Value {
        let b = bootstrap(opts).unwrap();
        let socket = &b["static_resources"]["clusters"][0]["transport_socket"];
        assert_eq!(socket["name"], "envoy.transport_sockets.tls");
        socket["typed_config"].clone()
    }

    #[test]
    fn tls_checks_the_service_name_or_the_given_one() {
        let ca = UpstreamTls { ca: "/tls/ca.crt".into(), ..Default::default() };
        let opts = BootstrapOptions {
            xds_address: "aixds-grpc.aixds.svc.cluster.local:18000".into(),
            tls: Some(ca.clone()),
            ..Default::default()
        };
        let ctx = tls_context(&opts);
        assert_eq!(ctx["sni"], "aixds-grpc.aixds.svc.cluster.local");
        let common = &ctx["common_tls_context"];
        assert_eq!(common["alpn_protocols"], json!(["h2"]));
        assert_eq!(common["validation_context"]["trusted_ca"]["filename"], "/tls/ca.crt");
        assert_eq!(
            common["validation_context"]["match_typed_subject_alt_names"],
            json!([{ "san_type": "DNS", "matcher": { "exact": "aixds-grpc.aixds.svc.cluster.local" } }])
        );
        assert!(common.get("tls_certificates").is_none());

        let named = BootstrapOptions {
            tls: Some(UpstreamTls {
                server_name: Some("aixds.aixds.svc".into()),
                client_cert: Some(ClientCert {
                    cert: "/tls/c.crt".into(),
                    key: "/tls/c.key".into(),
                }),
                ..ca.clone()
            }),
            ..opts
        };
        let ctx = tls_context(&named);
        assert_eq!(ctx["sni"], "aixds.aixds.svc");
        let common = &ctx["common_tls_context"];
        assert_eq!(
            common["validation_context"]["match_typed_subject_alt_names"][0]["matcher"]["exact"],
            "aixds.aixds.svc"
        );
        assert_eq!(
            common["tls_certificates"],
            json!([{ "certificate_chain": { "filename": "/tls/c.crt" },
                     "private_key": { "filename": "/tls/c.key" } }])
        );
    }

    #[test]
    fn tls_to_replicas_by_ip_checks_ip_sans_without_sni() {
        let opts = BootstrapOptions {
            xds_address: "10.0.0.6:18000,10.0.0.5:18000,10.0.0.6:18001".into(),
            tls: Some(UpstreamTls { ca: "/ca.crt".into(), ..Default::default() }),
            ..Default::default()
        };
        let ctx = tls_context(&opts);
        assert!(ctx.get("sni").is_none());
        assert_eq!(
            ctx["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"],
            json!([{ "san_type": "IP_ADDRESS", "matcher": { "exact": "10.0.0.5" } },
                   { "san_type": "IP_ADDRESS", "matcher": { "exact": "10.0.0.6" } }])
        );
        let plain = bootstrap(&BootstrapOptions { tls: None, ..opts }).unwrap();
        assert!(plain["static_resources"]["clusters"][0].get("transport_socket").is_none());
    }
}
