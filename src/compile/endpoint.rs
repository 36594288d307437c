//! ClusterLoadAssignments: the addresses behind a cluster.
//!
//! Takes: a Backend's endpoints, or an InferencePool and the pods it selects. Gives: the
//! ClusterLoadAssignment named after the cluster (and, for a pool, the pods it used).

use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::{
    Address, Pipe, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};

use crate::api::{BackendSpec, InferencePoolSpec, ObjectKey, Spec};
use crate::graph::{Graph, RefKind};

/// The endpoints of a Backend; those with an empty hostname or path are left out, as Envoy
/// would reject the whole assignment for them.
pub(super) fn backend(cluster: &str, spec: &BackendSpec) -> ClusterLoadAssignment {
    let addresses = spec.endpoints.iter().filter_map(|e| {
        if let Some(f) = e.fqdn.as_ref().filter(|f| !f.hostname.is_empty()) {
            Some(socket(&f.hostname, f.port))
        } else if let Some(ip) = &e.ip {
            Some(socket(&ip.address, ip.port))
        } else {
            e.unix.as_ref().filter(|u| !u.path.is_empty()).map(|u| Address {
                address: Some(address::Address::Pipe(Pipe {
                    path: u.path.clone(),
                    ..Default::default()
                })),
            })
        }
    });
    assignment(cluster, addresses.collect())
}

/// One endpoint per ready pod with a valid IP that `pool` selects, on each target port.
/// Returns the pods used, in key order.
pub(super) fn pool(
    cluster: &str,
    graph: &Graph,
    pool: &ObjectKey,
    spec: &InferencePoolSpec,
) -> (ClusterLoadAssignment, Vec<ObjectKey>) {
    let mut addresses = Vec::new();
    let mut pods = Vec::new();
    for (kind, node) in graph.references(pool) {
        let Some(Spec::Pod(pod)) = node.object.as_deref().map(|o| &o.spec) else { continue };
        let Some(ip) = pod.ip.as_deref().filter(|ip| ip.parse::<IpAddr>().is_ok()) else {
            continue;
        };
        if kind != RefKind::Selects || !pod.ready {
            continue;
        }
        for port in &spec.target_ports {
            addresses.push(socket(ip, port.number));
        }
        pods.push(node.key.clone());
    }
    (assignment(cluster, addresses), pods)
}

pub(super) fn socket(host: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

pub(super) fn assignment(cluster: &str, addresses: Vec<Address>) -> ClusterLoadAssignment {
    let lb_endpoints = addresses
        .into_iter()
        .map(|a| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(a),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: vec![LocalityLbEndpoints { lb_endpoints, ..Default::default() }],
        ..Default::default()
    }
}
