//! Listeners: one per distinct port across the listeners of aixds's accepted Gateways.
//!
//! Takes: the Gateways in the graph, their listeners judged by `graph::listeners`. Gives: per
//! port the listeners served there, and an Envoy Listener whose HTTP connection manager fetches
//! the port's routing scopes over ADS (scoped routes, see `route.rs`: the key is the port and
//! the scope header, which the listener sets to the default scope before any route is picked
//! and the router phase to the model's), runs the translation ext_proc's router phase before the
//! router, writes the access log when one is asked for, and turns Envoy's own replies
//! into the client's error format (`local_reply.rs`). An HTTPS port terminates TLS with a filter
//! chain per listener, chosen by SNI, its certificates fetched over SDS (`secret.rs`).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::common::mutation_rules::v3::{HeaderMutation, header_mutation};
use envoy_types::pb::envoy::config::core::v3::{
    Address, HeaderValue, HeaderValueOption, SocketAddress, TransportSocket, TypedExtensionConfig,
    address, header_value_option, socket_address, transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, ScopedRds, ScopedRoutes, http_connection_manager,
    http_filter, scoped_routes,
};
use envoy_types::pb::envoy::extensions::http::early_header_mutation::header_mutation::v3::HeaderMutation as EarlyHeaderMutation;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue, UInt32Value};
use envoy_types::util::pack_any;
use prost::{Message, Name};

use super::{
    BODY_BUFFER_LIMIT, CompileOptions, access_log, ads_config_source, canonical, extproc,
    local_reply, picker, ratelimit, route, secret,
};
use crate::api::{Kind, MODEL_HEADER, ObjectKey};
use crate::graph::{Graph, listeners};
use crate::wire::{DEFAULT_SCOPE, SCOPE_HEADER, SCOPE_PORT_HEADER};
use crate::xds::Resource;

/// The name of the Listener on `port`.
pub fn name(port: u16) -> String {
    format!("listener-{port}")
}

/// One Gateway listener Envoy serves (or the default listener, when there is no Gateway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Served {
    pub gateway: Option<ObjectKey>,
    pub name: String,
    pub port: u16,
    pub hostname: Option<String>,
    /// HTTPS: the Secrets of its certificates. `None`: plain HTTP.
    pub certificates: Option<Vec<ObjectKey>>,
}

impl Served {
    fn share(&self) -> listeners::PortShare<'_> {
        listeners::PortShare {
            gateway: self.gateway.as_ref(),
            name: &self.name,
            https: self.certificates.is_some(),
            hostname: self.hostname.as_deref(),
        }
    }
}

/// The listeners of `key` Envoy serves: `None` when there is no such Gateway, empty when it is
/// another controller's or not accepted (it still counts as a Gateway, so there is no default
/// listener).
pub(super) fn gateway(graph: &Graph, key: &ObjectKey) -> Option<Vec<Served>> {
    graph.object(key).filter(|o| o.key.kind == Kind::Gateway)?;
    if !graph.owns_gateway(key) || !graph.node(key).is_some_and(|n| n.accepted()) {
        return Some(Vec::new());
    }
    let served = listeners::listeners(graph, key)
        .into_iter()
        .filter(|l| l.usable())
        .map(|l| Served {
            gateway: Some(key.clone()),
            name: l.spec.name.clone(),
            port: l.spec.port,
            hostname: l.spec.hostname.clone(),
            certificates: l.https().then(|| l.certificates.clone()),
        })
        .collect();
    Some(served)
}

/// Port → the listeners Envoy serves on it. With no Gateway object at all, the default port
/// alone, so that a manifest of routes and backends still serves. Listeners of several Gateways
/// share a port when they agree (`graph::listeners::shared_port_conflict`, which the status
/// writer reads too): the first, by Gateway then listener order, sets the protocol, and an HTTPS
/// listener whose hostname an earlier one on the port has is left out.
pub(super) fn ports(
    gateways: &BTreeMap<ObjectKey, Vec<Served>>,
    opts: &CompileOptions,
) -> BTreeMap<u16, Vec<Served>> {
    if gateways.is_empty() {
        let default = Served {
            gateway: None,
            name: String::new(),
            port: opts.default_port,
            hostname: None,
            certificates: None,
        };
        return BTreeMap::from([(opts.default_port, vec![default])]);
    }
    let mut ports: BTreeMap<u16, Vec<Served>> = BTreeMap::new();
    for served in gateways.values().flatten() {
        let on_port = ports.entry(served.port).or_default();
        let earlier: Vec<listeners::PortShare> = on_port.iter().map(Served::share).collect();
        if listeners::shared_port_conflict(&earlier, &served.share()).is_none() {
            on_port.push(served.clone());
        }
    }
    ports
}

pub(super) fn compile(opts: &CompileOptions, port: u16, served: &[Served]) -> Resource {
    let name = name(port);
    let hcm = HttpConnectionManager {
        stat_prefix: name.clone(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::ScopedRoutes(
            scoped_routes_config(port),
        )),
        early_header_mutation_extensions: vec![scope_headers(port)],
        // The router phase sets the model header the routes match on, so it runs first; the pool
        // phase (on routes to pools only) readies Anthropic requests for the pool's endpoint
        // picker, which comes next.
        http_filters: vec![
            extproc::router_filter(),
            ratelimit::local_filter(),
            ratelimit::filter(opts.ratelimit_fail_closed),
            extproc::pool_filter(),
            picker::picker_filter(),
            HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(
                    pack_any(Router::default()),
                )),
                ..Default::default()
            },
        ],
        access_log: opts.access_log.iter().map(|path| access_log::file(path)).collect(),
        // Envoy is the edge: the client address is the connection's (or that many trusted
        // proxies back in x-forwarded-for), never what a client writes in the header, which
        // would let it pick its own rate limit bucket.
        use_remote_address: Some(BoolValue { value: true }),
        xff_num_trusted_hops: opts.xff_trusted_hops,
        // Clients are external now; their x-request-id is kept (for tracing and the access
        // log) rather than replaced, while the x-envoy-* headers they send are dropped.
        preserve_external_request_id: true,
        ..Default::default()
    };
    // HttpConnectionManager.local_reply_config is field 38, encoded apart (see `local_reply.rs`).
    let mut hcm = hcm.encode_to_vec();
    canonical::append_field(&mut hcm, 38, &local_reply::encoded());
    let filters = vec![Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(filter::ConfigType::TypedConfig(Any {
            type_url: HttpConnectionManager::type_url(),
            value: hcm,
        })),
    }];
    // HTTPS: a filter chain per listener, chosen by the client's SNI (the listener's hostname;
    // none takes the rest), each presenting its certificates, which Envoy fetches over SDS: no
    // private key is in the Listener, and a rotated Secret needs no listener drain.
    let https = served.first().is_some_and(|s| s.certificates.is_some());
    let filter_chains = match https {
        false => vec![FilterChain { filters, ..Default::default() }],
        true => served
            .iter()
            .map(|s| FilterChain {
                filter_chain_match: Some(FilterChainMatch {
                    server_names: s.hostname.iter().cloned().collect(),
                    ..Default::default()
                }),
                filters: filters.clone(),
                transport_socket: Some(tls_transport(
                    s.certificates.as_deref().unwrap_or_default(),
                )),
                ..Default::default()
            })
            .collect(),
    };
    let listener_filters = match https {
        false => Vec::new(),
        true => vec![ListenerFilter {
            name: "envoy.filters.listener.tls_inspector".into(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
                TlsInspector::default(),
            ))),
            ..Default::default()
        }],
    };
    let listener = Listener {
        name: name.clone(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: opts.listener_address.clone(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
                ..Default::default()
            })),
        }),
        per_connection_buffer_limit_bytes: Some(UInt32Value { value: BODY_BUFFER_LIMIT }),
        listener_filters,
        filter_chains,
        ..Default::default()
    };
    let mut sources: Vec<ObjectKey> = served.iter().filter_map(|s| s.gateway.clone()).collect();
    sources.dedup();
    Resource::new(name, &listener, sources)
}

/// Routing by scope: the key is the port's [`SCOPE_PORT_HEADER`] then [`SCOPE_HEADER`], each
/// read whole. Every listener gets every ScopedRouteConfiguration over ADS (scoped routes
/// subscribe to all of them); the port in the key keeps each listener to its own.
fn scoped_routes_config(port: u16) -> ScopedRoutes {
    use scoped_routes::scope_key_builder::{FragmentBuilder, fragment_builder};
    let header = |name: &str| FragmentBuilder {
        r#type: Some(fragment_builder::Type::HeaderValueExtractor(
            fragment_builder::HeaderValueExtractor {
                name: name.into(),
                extract_type: Some(fragment_builder::header_value_extractor::ExtractType::Index(0)),
                ..Default::default()
            },
        )),
    };
    ScopedRoutes {
        name: route::config_name(port),
        scope_key_builder: Some(scoped_routes::ScopeKeyBuilder {
            fragments: vec![header(SCOPE_PORT_HEADER), header(SCOPE_HEADER)],
        }),
        rds_config_source: Some(ads_config_source()),
        config_specifier: Some(scoped_routes::ConfigSpecifier::ScopedRds(ScopedRds {
            scoped_rds_config_source: Some(ads_config_source()),
            ..Default::default()
        })),
    }
}

/// Before a route is picked: the port and the default scope, replacing whatever a client sent
/// (a client's scope header could only lose it its own routes, but it is not the client's), and
/// no model header.
fn scope_headers(port: u16) -> TypedExtensionConfig {
    let set = |key: &str, value: String| HeaderMutation {
        action: Some(header_mutation::Action::Append(HeaderValueOption {
            header: Some(HeaderValue { key: key.into(), value, ..Default::default() }),
            append_action: header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..Default::default()
        })),
    };
    let mutation = EarlyHeaderMutation {
        mutations: vec![
            // The router phase sets it from the body; a client's own would pick a route (and a
            // rate limit) before the body is read.
            HeaderMutation { action: Some(header_mutation::Action::Remove(MODEL_HEADER.into())) },
            set(SCOPE_PORT_HEADER, port.to_string()),
            set(SCOPE_HEADER, DEFAULT_SCOPE.into()),
        ],
    };
    TypedExtensionConfig { name: "aixds.scope".into(), typed_config: Some(pack_any(mutation)) }
}

/// TLS termination with the certificates of `secrets`, by SDS name over the ADS stream; HTTP/2
/// and HTTP/1.1 offered by ALPN.
fn tls_transport(secrets: &[ObjectKey]) -> TransportSocket {
    let context = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: secrets
                .iter()
                .map(|key| SdsSecretConfig {
                    name: secret::sds_name(key),
                    sds_config: Some(ads_config_source()),
                })
                .collect(),
            alpn_protocols: vec!["h2".into(), "http/1.1".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(context))),
    }
}
