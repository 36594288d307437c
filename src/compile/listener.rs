//! Listeners: one per distinct port across the accepted Gateways' listeners.
//!
//! Takes: the Gateways in the graph. Gives: the port set, and per port an Envoy Listener whose
//! HTTP connection manager fetches RouteConfiguration `route-{port}` over ADS and runs the
//! translation ext_proc's router phase before the router, writes the access log when one is
//! asked for, and turns Envoy's own replies into the client's error format (`local_reply.rs`).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use envoy_types::util::pack_any;
use prost::{Message, Name};

use super::{
    BODY_BUFFER_LIMIT, CompileOptions, access_log, ads_config_source, canonical, extproc,
    local_reply, picker, route,
};
use crate::api::{Kind, ObjectKey, Spec};
use crate::graph::Graph;
use crate::xds::Resource;

pub(super) fn name(port: u16) -> String {
    format!("listener-{port}")
}

/// The listener ports `key` contributes: `None` when there is no such Gateway, empty when it is
/// not accepted (it still counts as a Gateway, so there is no default listener).
pub(super) fn gateway(graph: &Graph, key: &ObjectKey) -> Option<Vec<u16>> {
    let Spec::Gateway(spec) = &graph.object(key)?.spec else { return None };
    if !graph.node(key).is_some_and(|n| n.accepted()) {
        return Some(Vec::new());
    }
    let mut ports: Vec<u16> = spec.listeners.iter().map(|l| l.port).collect();
    ports.sort_unstable();
    ports.dedup();
    Some(ports)
}

/// Port → the Gateways listening on it. With no Gateway object at all, the default port alone,
/// so that a manifest of routes and backends still serves.
pub(super) fn ports(
    gateways: &BTreeMap<ObjectKey, Vec<u16>>,
    opts: &CompileOptions,
) -> BTreeMap<u16, Vec<ObjectKey>> {
    if gateways.is_empty() {
        return BTreeMap::from([(opts.default_port, Vec::new())]);
    }
    let mut ports: BTreeMap<u16, Vec<ObjectKey>> = BTreeMap::new();
    for (key, gateway_ports) in gateways {
        for port in gateway_ports {
            ports.entry(*port).or_default().push(key.clone());
        }
    }
    ports
}

/// The ports of `gateway` (all of them, or the one `section`/`port` picks) that have a listener.
pub(super) fn gateway_ports(
    graph: &Graph,
    gateway: &ObjectKey,
    section: Option<&str>,
    port: Option<i32>,
) -> Vec<u16> {
    if gateway.kind != Kind::Gateway || !graph.node(gateway).is_some_and(|n| n.accepted()) {
        return Vec::new();
    }
    let Some(Spec::Gateway(spec)) = graph.object(gateway).map(|o| &o.spec) else {
        return Vec::new();
    };
    spec.listeners
        .iter()
        .filter(|l| section.is_none_or(|s| s == l.name))
        .filter(|l| port.is_none_or(|p| p == i32::from(l.port)))
        .map(|l| l.port)
        .collect()
}

pub(super) fn compile(opts: &CompileOptions, port: u16, gateways: &[ObjectKey]) -> Resource {
    let name = name(port);
    let hcm = HttpConnectionManager {
        stat_prefix: name.clone(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: route::config_name(port),
        })),
        // The router phase sets the model header the routes match on, so it runs first; the pool
        // phase (on routes to pools only) readies Anthropic requests for the pool's endpoint
        // picker, which comes next.
        http_filters: vec![
            extproc::router_filter(),
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
        ..Default::default()
    };
    // HttpConnectionManager.local_reply_config is field 38, encoded apart (see `local_reply.rs`).
    let mut hcm = hcm.encode_to_vec();
    canonical::append_field(&mut hcm, 38, &local_reply::encoded());
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
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(Any {
                    type_url: HttpConnectionManager::type_url(),
                    value: hcm,
                })),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    Resource::new(name, &listener, gateways.to_vec())
}
