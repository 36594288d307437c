//! The two ext_proc filters that call aixds's translation service (see [`crate::extproc`]).
//!
//! Takes: nothing but a cluster name. Gives: the router-phase and pool-phase HTTP filters every
//! listener runs before the router (with the per-route configs that turn the pool phase on and
//! off), and the protocol options that put the upstream-phase filter in front of each backend
//! cluster's codec.

use envoy_types::pb::envoy::config::common::mutation_rules::v3::HeaderMutationRules;
use envoy_types::pb::envoy::config::core::v3::{
    GrpcService, HeaderValue, Http1ProtocolOptions, Http2ProtocolOptions, grpc_service,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::{
    ExtProcOverrides, ExtProcPerRoute, ExternalProcessor, MetadataOptions, ProcessingMode,
    ext_proc_per_route, metadata_options, processing_mode,
};
use envoy_types::pb::envoy::extensions::filters::http::upstream_codec::v3::UpstreamCodec;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration};
use envoy_types::util::pack_any;

use crate::bootstrap::XDS_CLUSTER;
use crate::wire::{
    ATTEMPT_METADATA_NAMESPACE, BACKEND_METADATA, METADATA_NAMESPACE, PHASE_METADATA,
    POOL_HTTP_PHASE, POOL_PHASE, RESPONSE_CODE_ATTRIBUTE, ROUTE_BACKEND_ATTRIBUTE,
};

pub(super) const EXT_PROC_FILTER: &str = "envoy.filters.http.ext_proc";
/// The name of the pool phase's filter, which routes turn on and off.
pub(super) const POOL_FILTER: &str = "aixds.pool";
/// The key of [`upstream_protocol_options`] in a cluster's `typed_extension_protocol_options`.
pub(super) const HTTP_PROTOCOL_OPTIONS: &str =
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const MESSAGE_TIMEOUT_SECONDS: i64 = 10;

/// The router phase: request headers and the whole request body, nothing of the response.
/// A failing service fails the request: unparsed, it would match no model anyway. It records
/// the client's API in the request's metadata, for Envoy's own replies.
pub(super) fn router_filter() -> HttpFilter {
    let mode = ProcessingMode {
        request_header_mode: processing_mode::HeaderSendMode::Send as i32,
        request_body_mode: processing_mode::BodySendMode::Buffered as i32,
        response_header_mode: processing_mode::HeaderSendMode::Skip as i32,
        response_body_mode: processing_mode::BodySendMode::None as i32,
        ..Default::default()
    };
    let config = ExternalProcessor {
        grpc_service: Some(grpc_service(Vec::new())),
        processing_mode: Some(mode),
        metadata_options: Some(MetadataOptions {
            receiving_namespaces: Some(metadata_options::MetadataNamespaces {
                untyped: vec![ATTEMPT_METADATA_NAMESPACE.into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    hcm_filter(EXT_PROC_FILTER, config)
}

/// The pool phase: on routes to InferencePools only (see [`pool_phase_on`]; the virtual host turns
/// it off everywhere else), after the router phase and before the pool's endpoint picker. It
/// asks for the whole request body and the streamed response, and turns the rest of the stream
/// off for requests it leaves alone.
pub(super) fn pool_filter() -> HttpFilter {
    let metadata = vec![HeaderValue {
        key: PHASE_METADATA.into(),
        value: POOL_PHASE.into(),
        ..Default::default()
    }];
    let mode = ProcessingMode {
        request_header_mode: processing_mode::HeaderSendMode::Send as i32,
        request_body_mode: processing_mode::BodySendMode::Buffered as i32,
        response_header_mode: processing_mode::HeaderSendMode::Send as i32,
        response_body_mode: processing_mode::BodySendMode::Streamed as i32,
        ..Default::default()
    };
    let config = ExternalProcessor {
        grpc_service: Some(grpc_service(metadata)),
        processing_mode: Some(mode),
        allow_mode_override: true,
        ..Default::default()
    };
    hcm_filter(POOL_FILTER, config)
}

/// An HCM ext_proc filter `name` of `config`, failing closed.
fn hcm_filter(name: &str, config: ExternalProcessor) -> HttpFilter {
    let config = ExternalProcessor {
        message_timeout: Some(message_timeout()),
        failure_mode_allow: false,
        status_on_error: Some(unavailable()),
        ..config
    };
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(config))),
        ..Default::default()
    }
}

/// The per-route config that turns the pool phase on.
pub(super) fn pool_phase_on() -> Any {
    pack_any(ExtProcPerRoute {
        r#override: Some(ext_proc_per_route::Override::Overrides(Default::default())),
    })
}

/// The per-route config that turns the pool phase on for an HTTPRoute's request: with no router
/// phase before it, the phase reads the API from the request's path (see [`POOL_HTTP_PHASE`]).
pub(super) fn pool_phase_on_http_route() -> Any {
    pack_any(ExtProcPerRoute {
        r#override: Some(ext_proc_per_route::Override::Overrides(ExtProcOverrides {
            grpc_initial_metadata: vec![HeaderValue {
                key: PHASE_METADATA.into(),
                value: POOL_HTTP_PHASE.into(),
                ..Default::default()
            }],
            ..Default::default()
        })),
    })
}

/// The per-route config that turns an ext_proc filter off.
pub(super) fn off() -> Any {
    pack_any(ExtProcPerRoute { r#override: Some(ext_proc_per_route::Override::Disabled(true)) })
}

/// The HTTP version a cluster speaks to its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UpstreamHttp {
    Http1,
    /// HTTP/2 without TLS, with prior knowledge: an InferencePool's `kubernetes.io/h2c`.
    H2c,
}

/// `protocol` to the backend, through the upstream-phase ext_proc: the request headers and
/// whole body (translated per attempt), the response headers and the body as it streams. A
/// request the backend takes as sent skips its body and its response's headers: the service says
/// so in its answer to the headers (`mode_override`), as only it knows the request's model and
/// the backend's schema; the response's status then comes with its first body message
/// ([`RESPONSE_CODE_ATTRIBUTE`]).
///
/// A fallback cluster (`fallback`) has several backends: its filter also sends the picked
/// endpoint's backendRef id ([`ROUTE_BACKEND_ATTRIBUTE`]) with the request headers.
pub(super) fn upstream_protocol_options(
    cluster: &str,
    fallback: bool,
    protocol: UpstreamHttp,
) -> Any {
    let metadata = vec![HeaderValue {
        key: BACKEND_METADATA.into(),
        value: cluster.into(),
        ..Default::default()
    }];
    let config = ExternalProcessor {
        grpc_service: Some(grpc_service(metadata)),
        processing_mode: Some(ProcessingMode {
            request_header_mode: processing_mode::HeaderSendMode::Send as i32,
            request_body_mode: processing_mode::BodySendMode::Buffered as i32,
            response_header_mode: processing_mode::HeaderSendMode::Send as i32,
            response_body_mode: processing_mode::BodySendMode::Streamed as i32,
            ..Default::default()
        }),
        allow_mode_override: true,
        message_timeout: Some(message_timeout()),
        failure_mode_allow: false,
        status_on_error: Some(unavailable()),
        request_attributes: if fallback {
            vec![ROUTE_BACKEND_ATTRIBUTE.into()]
        } else {
            Vec::new()
        },
        // With the first response message, headers or body: the status of a response whose
        // headers the service skips (a passthrough's).
        response_attributes: vec![RESPONSE_CODE_ATTRIBUTE.into()],
        // The request goes to the backend's host, which Envoy guards by default.
        mutation_rules: Some(HeaderMutationRules {
            allow_all_routing: Some(BoolValue { value: true }),
            ..Default::default()
        }),
        // Token usage, written at the end of the response; and what a retry of the request
        // needs from its first attempt, which is handed back to the next.
        metadata_options: Some(MetadataOptions {
            forwarding_namespaces: Some(metadata_options::MetadataNamespaces {
                untyped: vec![ATTEMPT_METADATA_NAMESPACE.into()],
                ..Default::default()
            }),
            receiving_namespaces: Some(metadata_options::MetadataNamespaces {
                untyped: vec![METADATA_NAMESPACE.into(), ATTEMPT_METADATA_NAMESPACE.into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(explicit(protocol)),
        ),
        http_filters: vec![
            HttpFilter {
                name: EXT_PROC_FILTER.into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(config))),
                ..Default::default()
            },
            // Envoy requires the codec to end an upstream filter chain.
            HttpFilter {
                name: "envoy.filters.http.upstream_codec".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                    UpstreamCodec::default(),
                ))),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    pack_any(options)
}

/// `protocol` to the endpoints, with no ext_proc in between: the clusters of HTTPRoutes' backends.
pub(super) fn plain_protocol_options(protocol: UpstreamHttp) -> Any {
    pack_any(HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(explicit(protocol)),
        ),
        ..Default::default()
    })
}

fn explicit(protocol: UpstreamHttp) -> http_protocol_options::ExplicitHttpConfig {
    use http_protocol_options::explicit_http_config::ProtocolConfig;
    http_protocol_options::ExplicitHttpConfig {
        protocol_config: Some(match protocol {
            UpstreamHttp::Http1 => {
                ProtocolConfig::HttpProtocolOptions(Http1ProtocolOptions::default())
            }
            UpstreamHttp::H2c => {
                ProtocolConfig::Http2ProtocolOptions(Http2ProtocolOptions::default())
            }
        }),
    }
}

/// aixds itself, over the bootstrap's HTTP/2 cluster that already carries ADS.
fn grpc_service(initial_metadata: Vec<HeaderValue>) -> GrpcService {
    GrpcService {
        target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(grpc_service::EnvoyGrpc {
            cluster_name: XDS_CLUSTER.into(),
            ..Default::default()
        })),
        initial_metadata,
        ..Default::default()
    }
}

/// What a request gets when aixds cannot be reached (no replica up, or the stream failed): 503,
/// which the listener's local reply config turns into the client's error with `retry-after`.
fn unavailable() -> HttpStatus {
    HttpStatus { code: StatusCode::ServiceUnavailable as i32 }
}

fn message_timeout() -> Duration {
    Duration { seconds: MESSAGE_TIMEOUT_SECONDS, nanos: 0 }
}
