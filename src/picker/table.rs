//! The pools the picker picks from, updated after every batch from the pools it affected (the
//! compiler keeps it with its other outputs; a pod's pools are in its affected set).
//!
//! Takes: the [`Graph`]. Gives: a [`PoolTable`]: each accepted InferencePool (`namespace/name`)
//! with its endpoints, `podIP:targetPort` for every ready pod it selects and every target port —
//! the same set the compiler sends Envoy as the pool's ClusterLoadAssignment.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::api::{Kind, ObjectKey, Spec};
use crate::graph::{Graph, Node, RefKind};

/// The table as streams read it; the run loop replaces it with the compiler's after every batch
/// ([`crate::compile::Tables`]).
pub type SharedPools = Arc<ArcSwap<PoolTable>>;

/// Persistent: a copy costs nothing and an update what it changes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PoolTable {
    pools: imbl::OrdMap<String, Pool>,
}

/// One accepted InferencePool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub key: ObjectKey,
    /// In pod key order, then target port order.
    pub endpoints: Vec<SocketAddr>,
}

impl PoolTable {
    pub fn shared() -> SharedPools {
        Arc::new(ArcSwap::from_pointee(PoolTable::default()))
    }

    /// Rebuilds the table from `graph` and makes it the one new streams use.
    pub fn publish(shared: &SharedPools, graph: &Graph) {
        shared.store(Arc::new(PoolTable::from_graph(graph)));
    }

    pub fn from_graph(graph: &Graph) -> PoolTable {
        let keys: Vec<ObjectKey> = graph.objects().map(|o| o.key.clone()).collect();
        PoolTable::default().update(graph, &keys)
    }

    /// The table after a batch that affected `affected`.
    pub fn update(&self, graph: &Graph, affected: &[ObjectKey]) -> PoolTable {
        let mut pools = self.pools.clone();
        for key in affected.iter().filter(|k| k.kind == Kind::InferencePool) {
            match pool(graph, key) {
                Some(pool) => pools.insert(pool_name(key), pool),
                None => pools.remove(&pool_name(key)),
            };
        }
        PoolTable { pools }
    }

    /// The pool `namespace/name`.
    pub fn get(&self, name: &str) -> Option<&Pool> {
        self.pools.get(name)
    }

    /// The one pool, when there is exactly one.
    pub fn only(&self) -> Option<&Pool> {
        match self.pools.len() {
            1 => self.pools.values().next(),
            _ => None,
        }
    }

    /// Every endpoint of every pool, once.
    pub fn endpoints(&self) -> BTreeSet<SocketAddr> {
        self.pools.values().flat_map(|p| p.endpoints.iter().copied()).collect()
    }

    pub fn len(&self) -> usize {
        self.pools.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }

    /// The pool names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.pools.keys().map(String::as_str)
    }
}

/// The pool `key` when it is accepted: `podIP:targetPort` of each ready pod it selects.
fn pool(graph: &Graph, key: &ObjectKey) -> Option<Pool> {
    let Spec::InferencePool(spec) = &graph.object(key)?.spec else { return None };
    if !graph.node(key).is_some_and(Node::accepted) {
        return None;
    }
    let mut endpoints = Vec::new();
    for (kind, node) in graph.references(key) {
        let Some(Spec::Pod(pod)) = node.object.as_deref().map(|p| &p.spec) else {
            continue;
        };
        let Some(ip) = pod.ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok()) else {
            continue;
        };
        if kind != RefKind::Selects || !pod.ready {
            continue;
        }
        endpoints.extend(spec.target_ports.iter().map(|p| SocketAddr::new(ip, p.number)));
    }
    Some(Pool { key: key.clone(), endpoints })
}

/// How streams name a pool: `namespace/name`, escaped as [`ObjectKey::path`] does so that two
/// pools never share a name.
pub fn pool_name(key: &ObjectKey) -> String {
    key.path()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ManifestSource;

    fn graph(yaml: &str) -> Graph {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.yaml"), yaml).unwrap();
        let mut source = ManifestSource::new(vec![dir.path().to_path_buf()]);
        let mut graph = Graph::new();
        for change in source.reload().unwrap() {
            change.apply_to(&mut graph);
        }
        graph
    }

    fn pod(name: &str, app: &str, ip: &str, ready: bool) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: ns, labels: {{app: {app}}}}}\n\
             status:\n  podIP: {ip}\n  conditions: [{{type: Ready, status: \"{}\"}}]\n---\n",
            if ready { "True" } else { "False" }
        )
    }

    const POOLS: &str = "apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\n\
        metadata: {name: llm, namespace: ns}\n\
        spec: {selector: {matchLabels: {app: llm}}, targetPorts: [{number: 8000}, {number: 8001}]}\n---\n\
        apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\n\
        metadata: {name: broken, namespace: ns}\nspec: {selector: {matchLabels: {app: x}}}\n---\n";

    #[test]
    fn ready_selected_pods_times_target_ports() {
        let yaml = [
            POOLS.to_string(),
            pod("a", "llm", "127.0.0.2", true),
            pod("b", "llm", "127.0.0.3", true),
            pod("c", "llm", "127.0.0.4", false),
            pod("d", "other", "127.0.0.5", true),
            pod("e", "llm", "not-an-ip", true),
        ]
        .concat();
        let table = PoolTable::from_graph(&graph(&yaml));
        // The pool without target ports is not accepted, so only one pool is known.
        assert_eq!(table.names().collect::<Vec<_>>(), ["ns/llm"]);
        let pool = table.only().unwrap();
        let endpoints: Vec<String> = pool.endpoints.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            endpoints,
            ["127.0.0.2:8000", "127.0.0.2:8001", "127.0.0.3:8000", "127.0.0.3:8001"]
        );
        assert_eq!(table.get("ns/llm"), Some(pool));
        assert_eq!(table.get("other/llm"), None);
        assert_eq!(table.endpoints().len(), 4);
    }

    #[test]
    fn publish_replaces_the_table() {
        let shared = PoolTable::shared();
        assert!(shared.load().is_empty());
        PoolTable::publish(&shared, &graph(&[POOLS, &pod("a", "llm", "10.0.0.1", true)].concat()));
        assert_eq!(shared.load().get("ns/llm").unwrap().endpoints.len(), 2);
    }
}
