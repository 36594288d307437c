//! Conditions that come from outside the graph: an Envoy's rejection (NACK) of a resource,
//! traced back to the objects that resource was compiled from.
//!
//! Takes: the connected Envoys' [`ClientInfo`] (each NACK with the resources Envoy's error names)
//! and the current [`Snapshot`] (each resource's `sources`). Gives: the [`Rejection`]s that still
//! stand, and per object an `Accepted=False` condition with reason `RejectedByEnvoy` and message
//! `"<node id>: <Envoy's error>"`, for `/debug/graph` and `aixds explain`.
//!
//! Nothing is stored: a rejection stands while the snapshot still serves the rejected resource at
//! the rejected version and that Envoy has not ACKed that version since. Fixing the object (a new
//! version), deleting it, or the Envoy disconnecting clears it with no bookkeeping.

mod explain;

pub use explain::explain;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::api::{Kind, ObjectKey};
use crate::graph::listeners::{ListenerState, listeners, port_conflicts};
use crate::graph::{Condition, ConditionType, Graph, Reason};
use crate::xds::{ClientInfo, Snapshot, TypeUrl};

/// One resource one Envoy rejected, and the objects it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub node_id: String,
    pub type_url: TypeUrl,
    pub resource: String,
    pub version: String,
    pub error: String,
    pub sources: Vec<ObjectKey>,
}

/// The rejections that still stand, by Envoy then type then resource.
pub fn rejections(clients: &[ClientInfo], snapshot: &Snapshot) -> Vec<Rejection> {
    let mut out = Vec::new();
    for client in clients {
        for t in &client.types {
            let Some(nack) = &t.last_nack else { continue };
            for (name, version) in &nack.rejected {
                let Some(resource) = snapshot.get(t.type_url, name) else { continue };
                if &resource.version != version || t.acked.get(name) == Some(version) {
                    continue;
                }
                out.push(Rejection {
                    node_id: client.node_id.clone(),
                    type_url: t.type_url,
                    resource: name.clone(),
                    version: version.clone(),
                    error: nack.error.clone(),
                    sources: resource.sources.clone(),
                });
            }
        }
    }
    out.sort_by(|a, b| {
        (&a.node_id, a.type_url, &a.resource).cmp(&(&b.node_id, b.type_url, &b.resource))
    });
    out.dedup();
    out
}

/// One `Accepted=False RejectedByEnvoy` condition per object a standing rejection traces to.
pub fn conditions(rejections: &[Rejection]) -> BTreeMap<ObjectKey, Vec<Condition>> {
    let mut messages: BTreeMap<&ObjectKey, Vec<String>> = BTreeMap::new();
    for r in rejections {
        for source in &r.sources {
            let message = format!("{}: {}", r.node_id, r.error);
            let list = messages.entry(source).or_default();
            if !list.contains(&message) {
                list.push(message);
            }
        }
    }
    messages
        .into_iter()
        .map(|(key, messages)| {
            let c = Condition::failed(
                ConditionType::Accepted,
                Reason::RejectedByEnvoy,
                messages.join("; "),
            );
            (key.clone(), vec![c])
        })
        .collect()
}

/// A Gateway's state as the Envoys have it: whether it is programmed, and each listener's
/// conditions, `Programmed` last.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayReport<'g> {
    pub programmed: Condition,
    pub listeners: Vec<(ListenerState<'g>, Vec<Condition>)>,
}

/// The report for the Gateway `key` (from [`produced`], and [`port_conflicts`] of the whole
/// graph): a listener is programmed once an Envoy has ACKed the Listener of its port and none
/// rejected it, unless another Gateway's listener keeps it off that port (`Conflicted`); the
/// Gateway once every listener it serves is.
pub fn gateway_report<'g>(
    graph: &'g Graph,
    key: &ObjectKey,
    produced: &BTreeMap<ObjectKey, Vec<Produced>>,
    conflicts: &HashMap<(ObjectKey, String), (Reason, String)>,
) -> GatewayReport<'g> {
    let produced = produced.get(key).map(Vec::as_slice).unwrap_or_default();
    let failed =
        |reason, message: String| Condition::failed(ConditionType::Programmed, reason, message);
    let on_port = |port: u16| -> Condition {
        let name = crate::compile::listener_name(port);
        let resource = produced.iter().find(|p| p.type_url == TypeUrl::Listener && p.name == name);
        match resource {
            None => failed(Reason::Invalid, format!("Listener {name} is not served")),
            Some(p) if p.envoys.iter().any(|e| e.state == Delivery::Rejected) => {
                failed(Reason::Invalid, format!("an Envoy rejected Listener {name}"))
            }
            Some(p) if p.envoys.iter().any(|e| e.state == Delivery::Acked) => {
                Condition::ok(ConditionType::Programmed)
            }
            Some(_) => failed(Reason::Pending, format!("no Envoy has ACKed Listener {name} yet")),
        }
    };
    let mut served = Vec::new();
    let listeners: Vec<(ListenerState<'g>, Vec<Condition>)> = listeners(graph, key)
        .into_iter()
        .map(|l| {
            let mut conditions = l.conditions.clone();
            let conflict = conflicts.get(&(key.clone(), l.spec.name.clone()));
            let programmed = match (l.usable(), conflict) {
                (false, _) => failed(Reason::Invalid, "the listener is not served".into()),
                (true, Some((reason, message))) => {
                    let c = Condition::failed(ConditionType::Conflicted, *reason, message.clone());
                    conditions.retain(|c| c.type_ != ConditionType::Conflicted);
                    conditions.push(c);
                    failed(Reason::Invalid, format!("not served: {message}"))
                }
                (true, None) => {
                    let c = on_port(l.spec.port);
                    served.push(c.clone());
                    c
                }
            };
            conditions.push(programmed);
            (l, conditions)
        })
        .collect();
    let programmed = match served.iter().find(|c| !c.is_good()) {
        Some(c) => c.clone(),
        None if served.is_empty() => failed(Reason::Invalid, "no listener is served".into()),
        None => Condition::ok(ConditionType::Programmed),
    };
    GatewayReport { programmed, listeners }
}

/// The conditions that come from the Envoys, to show with the graph's own: the standing
/// rejections (see [`conditions`]) and each Gateway's `Programmed`.
pub fn envoy_conditions(
    graph: &Graph,
    rejections: &[Rejection],
    produced: &BTreeMap<ObjectKey, Vec<Produced>>,
) -> BTreeMap<ObjectKey, Vec<Condition>> {
    let mut out = conditions(rejections);
    let conflicts = port_conflicts(graph);
    for gateway in graph.objects().filter(|o| o.key.kind == Kind::Gateway) {
        if graph.owns_gateway(&gateway.key) {
            let report = gateway_report(graph, &gateway.key, produced, &conflicts);
            out.entry(gateway.key.clone()).or_default().push(report.programmed);
        }
    }
    out
}

/// One resource compiled from an object, and where each Envoy that asked for it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Produced {
    pub type_url: TypeUrl,
    pub name: String,
    pub version: String,
    pub size: usize,
    pub envoys: Vec<EnvoyState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvoyState {
    pub node_id: String,
    pub state: Delivery,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Delivery {
    /// Envoy ACKed this version.
    Acked,
    /// Envoy rejected this version.
    Rejected,
    /// Envoy ACKed an older version and has not answered for this one yet.
    Outdated,
    /// Envoy asked for it and has not ACKed any version yet.
    Pending,
}

/// Per object, the resources compiled from it, with each subscribed Envoy's state.
pub fn produced(
    snapshot: &Snapshot,
    clients: &[ClientInfo],
    rejections: &[Rejection],
) -> BTreeMap<ObjectKey, Vec<Produced>> {
    let mut out: BTreeMap<ObjectKey, Vec<Produced>> = BTreeMap::new();
    for (type_url, r) in snapshot.all() {
        let envoys: Vec<EnvoyState> = clients
            .iter()
            .filter_map(|c| {
                let t = c.types.iter().find(|t| t.type_url == type_url)?;
                if !(t.wildcard || t.subscribed.contains(&r.name)) {
                    return None;
                }
                let rejected = rejections.iter().any(|x| {
                    x.node_id == c.node_id && x.type_url == type_url && x.resource == r.name
                });
                let state = match t.acked.get(&r.name) {
                    Some(v) if *v == r.version => Delivery::Acked,
                    _ if rejected => Delivery::Rejected,
                    Some(_) => Delivery::Outdated,
                    None => Delivery::Pending,
                };
                Some(EnvoyState { node_id: c.node_id.clone(), state })
            })
            .collect();
        let produced = Produced {
            type_url,
            name: r.name.clone(),
            version: r.version.clone(),
            size: r.body.value.len(),
            envoys,
        };
        for source in &r.sources {
            out.entry(source.clone()).or_default().push(produced.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use envoy_types::pb::envoy::config::cluster::v3::Cluster;

    use super::*;
    use crate::api::Kind;
    use crate::xds::{Nack, Resource, SnapshotStore, StreamKind, TypeInfo, Update};

    fn cluster(name: &str, tag: &str, source: &ObjectKey) -> Update {
        let c = Cluster { name: name.into(), alt_stat_name: tag.into(), ..Default::default() };
        let resource = Resource::new(name.into(), &c, vec![source.clone()]);
        Update { type_url: TypeUrl::Cluster, name: name.into(), resource: Some(resource) }
    }

    fn client(nack: Nack, acked: BTreeMap<String, String>) -> ClientInfo {
        ClientInfo {
            stream_id: 0,
            node_id: "envoy-1".into(),
            kind: StreamKind::Delta,
            types: vec![TypeInfo {
                type_url: TypeUrl::Cluster,
                wildcard: true,
                subscribed: vec![],
                sent_version: None,
                sent_nonce: None,
                acked_version: None,
                acked_nonce: None,
                acked,
                last_nack: Some(nack),
            }],
        }
    }

    #[test]
    fn a_rejection_stands_until_the_resource_changes_or_is_acked() {
        let key = ObjectKey::new(Kind::AIServiceBackend, "default", "a");
        let store = SnapshotStore::new();
        store.publish(vec![cluster("aisb/default/a", "bad", &key)]);
        let version = store.load().get(TypeUrl::Cluster, "aisb/default/a").unwrap().version.clone();
        let name = "aisb/default/a".to_string();
        let nack = Nack::new("1".into(), "cluster aisb/default/a: bad".into(), [(&name, &version)]);

        let found = rejections(&[client(nack.clone(), BTreeMap::new())], &store.load());
        assert_eq!(found.len(), 1);
        let conds = conditions(&found);
        assert_eq!(conds[&key][0].reason, Reason::RejectedByEnvoy);
        assert_eq!(conds[&key][0].message, "envoy-1: cluster aisb/default/a: bad");

        let acked = BTreeMap::from([(name.clone(), version.clone())]);
        assert!(rejections(&[client(nack.clone(), acked)], &store.load()).is_empty());
        store.publish(vec![cluster("aisb/default/a", "fixed", &key)]);
        assert!(rejections(&[client(nack, BTreeMap::new())], &store.load()).is_empty());
    }
}
