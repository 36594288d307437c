//! The Envoy side of the endpoint picker protocol, for an InferencePool.
//!
//! Takes: the pool's key, its `endpointPickerRef` (where the picker is, its failure mode).
//! Gives: the three pieces that make Envoy follow a picker's choice:
//! - [`picker_filter`]: the ext_proc HTTP filter to the pickers, and [`picker_on`], the
//!   per-route config that points it at one pool's picker (the pool named in the gRPC
//!   metadata) with that pool's failure mode;
//! - [`picker_cluster`]: the HTTP/2 cluster that reaches the picker's Service, health checked
//!   so that `FailOpen` works with a streamed body (see the comment inside);
//! - [`pool_load_balancing`]: the pool cluster's `override_host` policy, which sends the
//!   request to the first picked endpoint (later ones on retries), falls back to round robin
//!   when there is no pick, and records the endpoint used for the picker to report.

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster, LoadBalancingPolicy, cluster, load_balancing_policy,
};
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, GrpcService, HeaderValue, HealthCheck, Http2ProtocolOptions, TransportSocket,
    TypedExtensionConfig, data_source, grpc_service, health_check, transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::{
    ExtProcOverrides, ExtProcPerRoute, ExternalProcessor, MetadataOptions, ProcessingMode,
    ext_proc_per_route, external_processor, metadata_options, processing_mode,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::extensions::load_balancing_policies::override_host::v3::{
    OverrideHost, override_host::OverrideHostSource,
};
use envoy_types::pb::envoy::extensions::load_balancing_policies::round_robin::v3::RoundRobin;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, TlsCertificate, UpstreamTlsContext,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::envoy::r#type::metadata::v3::{MetadataKey, metadata_key};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration, UInt32Value};
use envoy_types::util::pack_any;

use crate::api::{FailureMode, ObjectKey};
use crate::bootstrap::{ClientCert, XDS_CLUSTER};
use crate::picker::{
    DESTINATION_ENDPOINT, EXT_PROC_HEALTH_SERVICE, LB_NAMESPACE, POOL_METADATA, SERVED_ENDPOINT,
    SUBSET_NAMESPACE, pool_name,
};

/// How long Envoy waits for the picker's answer to a message.
const MESSAGE_TIMEOUT_SECONDS: i64 = 10;
const CONNECT_TIMEOUT_SECONDS: i64 = 5;

/// The name of the picker filter in every listener's chain, and in `typed_per_filter_config`.
pub const PICKER_FILTER: &str = "aixds.picker";

/// The cluster of `pool`'s picker: `picker/{namespace}/{name}`.
pub fn picker_cluster_name(pool: &ObjectKey) -> String {
    format!("picker/{}", pool.path())
}

/// The endpoint picker filter every listener has, after the pool phase: request headers and a
/// `FULL_DUPLEX_STREAMED` request body to the picker, response headers back (the served
/// endpoint is reported there), `envoy.lb` metadata both ways and the subset hint forwarded.
///
/// Which picker, and what happens when it fails, is per pool: a route to a pool sets them with
/// [`picker_on`], and the virtual host turns the filter off everywhere else. One filter for all
/// pools keeps listeners unchanged as pools come and go (a listener change drains
/// connections). Until a route says otherwise the filter names aixds's own gRPC cluster.
pub fn picker_filter() -> HttpFilter {
    let config = ExternalProcessor {
        grpc_service: Some(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc { cluster_name: XDS_CLUSTER.into(), ..Default::default() },
            )),
            ..Default::default()
        }),
        processing_mode: Some(ProcessingMode {
            request_header_mode: processing_mode::HeaderSendMode::Send as i32,
            request_body_mode: processing_mode::BodySendMode::FullDuplexStreamed as i32,
            // Full-duplex bodies require the trailers to be sent (they end the body).
            request_trailer_mode: processing_mode::HeaderSendMode::Send as i32,
            // The served endpoint is reported on the response headers; the response body
            // streams to the client untouched.
            response_header_mode: processing_mode::HeaderSendMode::Send as i32,
            response_body_mode: processing_mode::BodySendMode::None as i32,
            response_trailer_mode: processing_mode::HeaderSendMode::Skip as i32,
        }),
        message_timeout: Some(Duration { seconds: MESSAGE_TIMEOUT_SECONDS, nanos: 0 }),
        failure_mode_allow: false,
        allow_mode_override: false,
        // A picker may ask to clear the route cache (the reference picker does): the route,
        // and for a split across pools the pool whose picker was asked, must stay.
        route_cache_action: external_processor::RouteCacheAction::Retain as i32,
        metadata_options: Some(MetadataOptions {
            forwarding_namespaces: Some(metadata_options::MetadataNamespaces {
                untyped: vec![LB_NAMESPACE.into(), SUBSET_NAMESPACE.into()],
                ..Default::default()
            }),
            receiving_namespaces: Some(metadata_options::MetadataNamespaces {
                untyped: vec![LB_NAMESPACE.into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    HttpFilter {
        name: PICKER_FILTER.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(config))),
        ..Default::default()
    }
}

/// The per-route config that sends a route's requests to `pool`'s picker over `cluster`.
/// `authority` is the picker's `host:port` as its Service names it (the gRPC `:authority`;
/// Envoy would otherwise send the cluster name, which is not a valid one). `FailOpen` lets a
/// request through (to an endpoint of Envoy's choosing) when the picker is down; `FailClose`
/// fails it.
pub fn picker_on(
    pool: &ObjectKey,
    cluster: &str,
    authority: &str,
    failure_mode: FailureMode,
) -> Any {
    let overrides = ExtProcOverrides {
        grpc_service: Some(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: cluster.to_string(),
                    authority: authority.to_string(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        grpc_initial_metadata: vec![HeaderValue {
            key: POOL_METADATA.into(),
            value: pool_name(pool),
            ..Default::default()
        }],
        failure_mode_allow: Some(BoolValue { value: failure_mode == FailureMode::FailOpen }),
        ..Default::default()
    };
    pack_any(ExtProcPerRoute {
        r#override: Some(ext_proc_per_route::Override::Overrides(overrides)),
    })
}

/// `host:port` as a gRPC `:authority` (an IPv6 address in brackets).
pub fn authority(host: &str, port: u16) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

/// A data source read from a file in Envoy's filesystem.
fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::Filename(path.into())),
        ..Default::default()
    }
}

/// The cluster of a picker at `host:port` (an IP, or a DNS name such as a Service's), over
/// HTTP/2; with `tls`, over TLS without checking the picker's certificate (pickers commonly
/// serve a self-signed one). With `client_cert`, always over TLS, presenting that certificate
/// (how aixds's own picker authenticates Envoy).
pub fn picker_cluster(
    name: &str,
    host: &str,
    port: u16,
    tls: bool,
    client_cert: Option<&ClientCert>,
) -> Cluster {
    let ip = host.parse::<std::net::IpAddr>().is_ok();
    let discovery =
        if ip { cluster::DiscoveryType::Static } else { cluster::DiscoveryType::StrictDns };
    let endpoint = LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(super::endpoint::socket(host, port)),
            ..Default::default()
        })),
        ..Default::default()
    };
    let http2 = HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(
                        http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            Http2ProtocolOptions::default(),
                        ),
                    ),
                },
            ),
        ),
        ..Default::default()
    };
    let transport_socket = (tls || client_cert.is_some()).then(|| {
        let context = UpstreamTlsContext {
            sni: if ip { String::new() } else { host.to_string() },
            common_tls_context: client_cert.map(|c| CommonTlsContext {
                tls_certificates: vec![TlsCertificate {
                    certificate_chain: Some(file(&c.cert)),
                    private_key: Some(file(&c.key)),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(context))),
        }
    });
    let second = Duration { seconds: 1, nanos: 0 };
    Cluster {
        name: name.to_string(),
        connect_timeout: Some(Duration { seconds: CONNECT_TIMEOUT_SECONDS, nanos: 0 }),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(discovery as i32)),
        // A picker that is down must be known before a request starts: Envoy fails a
        // `FailOpen` request open only if its ext_proc stream fails before the first body chunk
        // is handed over, which "no healthy host" does at once and a refused connection does
        // not. So the picker is health checked (the protocol's gRPC health service), and
        // without a healthy one no host is tried (no panic routing).
        health_checks: vec![HealthCheck {
            timeout: Some(second),
            interval: Some(second),
            no_traffic_interval: Some(second),
            unhealthy_threshold: Some(UInt32Value { value: 1 }),
            healthy_threshold: Some(UInt32Value { value: 1 }),
            health_checker: Some(health_check::HealthChecker::GrpcHealthCheck(
                health_check::GrpcHealthCheck {
                    service_name: EXT_PROC_HEALTH_SERVICE.into(),
                    // Else the cluster name, which is not a valid authority.
                    authority: authority(host, port),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }],
        common_lb_config: Some(cluster::CommonLbConfig {
            healthy_panic_threshold: Some(Percent { value: 0.0 }),
            ..Default::default()
        }),
        dns_lookup_family: if ip { 0 } else { cluster::DnsLookupFamily::V4Only as i32 },
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![endpoint],
                ..Default::default()
            }],
            ..Default::default()
        }),
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            pack_any(http2),
        )]
        .into(),
        transport_socket,
        ..Default::default()
    }
}

/// A pool cluster's `load_balancing_policy`: the endpoints the picker named (in `envoy.lb`
/// metadata, else the request header), in order across retries; round robin without a pick.
/// The endpoint used is written to `envoy.lb` / `x-gateway-destination-endpoint-served`.
pub fn pool_load_balancing() -> LoadBalancingPolicy {
    let lb_key = |key: &str| MetadataKey {
        key: LB_NAMESPACE.into(),
        path: vec![metadata_key::PathSegment {
            segment: Some(metadata_key::path_segment::Segment::Key(key.into())),
        }],
    };
    let override_host = OverrideHost {
        override_host_sources: vec![
            OverrideHostSource {
                metadata: Some(lb_key(DESTINATION_ENDPOINT)),
                ..Default::default()
            },
            OverrideHostSource { header: DESTINATION_ENDPOINT.into(), ..Default::default() },
        ],
        selected_host_key: Some(lb_key(SERVED_ENDPOINT)),
        fallback_policy: Some(policy(
            "envoy.load_balancing_policies.round_robin",
            pack_any(RoundRobin::default()),
        )),
    };
    policy("envoy.load_balancing_policies.override_host", pack_any(override_host))
}

fn policy(name: &str, config: Any) -> LoadBalancingPolicy {
    LoadBalancingPolicy {
        policies: vec![load_balancing_policy::Policy {
            typed_extension_config: Some(TypedExtensionConfig {
                name: name.into(),
                typed_config: Some(config),
            }),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Kind;
    use prost::Message;

    fn ext_proc(filter: &HttpFilter) -> ExternalProcessor {
        let Some(http_filter::ConfigType::TypedConfig(any)) = &filter.config_type else {
            panic!("{filter:?}")
        };
        ExternalProcessor::decode(any.value.as_slice()).unwrap()
    }

    #[test]
    fn the_failure_mode_decides_failure_mode_allow() {
        let pool = ObjectKey::new(Kind::InferencePool, "ns", "p");
        let on = |mode| {
            let any = picker_on(&pool, "picker/ns/p", "epp.ns:9002", mode);
            let per_route = ExtProcPerRoute::decode(any.value.as_slice()).unwrap();
            let Some(ext_proc_per_route::Override::Overrides(o)) = per_route.r#override else {
                panic!("{per_route:?}")
            };
            o
        };
        assert_eq!(on(FailureMode::FailOpen).failure_mode_allow, Some(BoolValue { value: true }));
        let close = on(FailureMode::FailClose);
        assert_eq!(close.failure_mode_allow, Some(BoolValue { value: false }));
        assert_eq!(close.grpc_initial_metadata[0].value, "ns/p");
        let Some(grpc_service::TargetSpecifier::EnvoyGrpc(envoy)) =
            close.grpc_service.unwrap().target_specifier
        else {
            panic!()
        };
        assert_eq!(
            (envoy.cluster_name.as_str(), envoy.authority.as_str()),
            ("picker/ns/p", "epp.ns:9002")
        );
        let config = ext_proc(&picker_filter());
        assert!(!config.allow_mode_override);
        assert_eq!(config.route_cache_action, external_processor::RouteCacheAction::Retain as i32);
        let mode = config.processing_mode.unwrap();
        assert_eq!(
            mode.request_body_mode,
            processing_mode::BodySendMode::FullDuplexStreamed as i32
        );
    }

    #[test]
    fn the_picker_cluster_resolves_names_and_checks_health() {
        let by_ip = picker_cluster("c", "10.0.0.7", 9002, false, None);
        assert_eq!(
            by_ip.cluster_discovery_type,
            Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Static as i32))
        );
        assert!(by_ip.transport_socket.is_none());
        let by_name = picker_cluster("c", "epp.ns.svc", 9002, true, None);
        assert_eq!(
            by_name.cluster_discovery_type,
            Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::StrictDns as i32))
        );
        let Some(transport_socket::ConfigType::TypedConfig(tls)) =
            by_name.transport_socket.unwrap().config_type
        else {
            panic!()
        };
        let tls = UpstreamTlsContext::decode(tls.value.as_slice()).unwrap();
        assert_eq!(tls.sni, "epp.ns.svc");
        assert!(tls.common_tls_context.is_none(), "no certificate validation");

        // With Envoy's client certificate, always TLS, presenting it.
        let cert = ClientCert { cert: "/tls/tls.crt".into(), key: "/tls/tls.key".into() };
        let authenticated = picker_cluster("c", "10.0.0.7", 9002, false, Some(&cert));
        let Some(transport_socket::ConfigType::TypedConfig(tls)) =
            authenticated.transport_socket.unwrap().config_type
        else {
            panic!("no TLS")
        };
        let tls = UpstreamTlsContext::decode(tls.value.as_slice()).unwrap();
        let certificate = &tls.common_tls_context.unwrap().tls_certificates[0];
        assert_eq!(certificate.certificate_chain, Some(file("/tls/tls.crt")));
        assert_eq!(certificate.private_key, Some(file("/tls/tls.key")));
        let v6 = picker_cluster("c", "fd00::1", 9002, false, None);
        let Some(health_check::HealthChecker::GrpcHealthCheck(grpc)) =
            &v6.health_checks[0].health_checker
        else {
            panic!()
        };
        assert_eq!(grpc.authority, "[fd00::1]:9002");
    }
}
