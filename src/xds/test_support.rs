//! Resources and updates for the xDS unit tests.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints};

use super::{Resource, TypeUrl, Update};

/// A cluster whose content (and so version) varies with `tag`.
pub fn cluster(name: &str, tag: &str) -> Update {
    let c = Cluster { name: name.into(), alt_stat_name: tag.into(), ..Default::default() };
    put(TypeUrl::Cluster, Resource::new(name.into(), &c, vec![]))
}

/// A load assignment whose content (and so version) varies with `priority`.
pub fn cla(name: &str, priority: u32) -> Update {
    let endpoints = vec![LocalityLbEndpoints { priority, ..Default::default() }];
    let c = ClusterLoadAssignment { cluster_name: name.into(), endpoints, ..Default::default() };
    put(TypeUrl::ClusterLoadAssignment, Resource::new(name.into(), &c, vec![]))
}

pub fn put(type_url: TypeUrl, resource: Resource) -> Update {
    Update { type_url, name: resource.name.clone(), resource: Some(resource) }
}

pub fn delete(type_url: TypeUrl, name: &str) -> Update {
    Update { type_url, name: name.into(), resource: None }
}
