//! The dependency graph: every object, every reference between them, and the conditions that
//! follow.
//!
//! Takes: [`Graph::apply`] and [`Graph::delete`] per object, from any source.
//! Gives: per-object [`Condition`]s and, for each change, the [`Affected`] set of objects whose
//! compiled output may differ. That set is found by walking reverse edges from the changed node,
//! so its cost is proportional to the set, not to the graph.
//!
//! Nodes are objects keyed by [`ObjectKey`]. A reference to an object that does not exist yet is
//! an edge to a *placeholder* node; when the object appears, the placeholder fills in and its
//! referrers are in the affected set, so their conditions flip with no other change. A placeholder
//! that nothing references any more is removed.
//!
//! Edges point from referrer to target and carry the [`RefKind`] (the field that made them).
//! Two kinds are walked forward as well when computing the affected set: a policy's `targetRef`
//! (the policy changes its target's output) and a route's `parentRef` (the route's Gateway
//! output, without expanding to the Gateway's other routes).
//!
//! [`Graph::reference_permitted`] says whether a ReferenceGrant in another namespace permits a
//! reference into it (a Gateway's certificateRefs need one); a grant's change affects the
//! referrers it permits, before or after, found through an index of references by target
//! namespace (`grants.rs`).
//!
//! A Service has the EndpointSlices labelled with its name (`Selects` edges, indexed by
//! Service), so that a slice change reaches the routes to the Service.
//!
//! An InferencePool selects Pods by labels in its namespace. Pods are indexed by label so that a
//! pool change finds its pods without scanning the namespace, and pools by their selector's first
//! label so that a pod change finds the pools that may select it through its own labels.

mod conditions;
pub mod export;
mod grants;
pub mod listeners;
mod refs;

pub use conditions::{Condition, ConditionType, Issue, Reason};
pub use refs::{RefKind, http_backend_key};

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use petgraph::Direction;
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences};

use crate::api::{Kind, Object, ObjectKey, Spec};

/// One node: an object, or a placeholder for one that is referenced but not (yet) there.
#[derive(Debug)]
pub struct Node {
    pub key: ObjectKey,
    pub object: Option<Arc<Object>>,
    /// Problems found in the object itself, e.g. an unsupported type; set by [`Graph::apply`].
    issues: Vec<Issue>,
    /// Set by the source when two definitions of this object disagree.
    conflict: Option<String>,
    conditions: Vec<Condition>,
    /// For a route: where each of its parentRefs attaches, worked out with its conditions (which
    /// are recomputed whenever a Gateway, listener certificate or grant it depends on changes),
    /// so that the compiler and the status writer read it rather than work it out again.
    parents: Vec<listeners::ParentState>,
}

impl Node {
    pub fn is_placeholder(&self) -> bool {
        self.object.is_none()
    }

    pub fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    /// Accepted unless a condition says otherwise; placeholders are never accepted.
    pub fn accepted(&self) -> bool {
        self.object.is_some()
            && self.conditions.iter().all(|c| c.type_ != ConditionType::Accepted || c.status)
    }

    pub fn resolved(&self) -> bool {
        self.conditions.iter().all(|c| c.type_ != ConditionType::ResolvedRefs || c.status)
    }

    /// For a route, where each of its parentRefs that names a Gateway attaches (see
    /// [`listeners::route_parents`]), as of its last conditions.
    pub fn parents(&self) -> &[listeners::ParentState] {
        &self.parents
    }

    /// Where the source holds conflicting definitions of the object, if it does.
    pub fn conflict(&self) -> Option<&str> {
        self.conflict.as_deref()
    }
}

/// Objects whose compiled output may have changed, the changed object first.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Affected {
    pub keys: Vec<ObjectKey>,
}

impl Affected {
    pub fn contains(&self, key: &ObjectKey) -> bool {
        self.keys.contains(key)
    }
}

#[derive(Default)]
pub struct Graph {
    g: StableDiGraph<Node, RefKind>,
    index: HashMap<ObjectKey, NodeIndex>,
    /// The policies targeting each node (the sources of its `TargetRef` edges). A Gateway's
    /// incoming edges hold every route attached to it: finding its few policies by walking
    /// them made compiling N routes O(N²).
    targeted_by: HashMap<NodeIndex, Vec<NodeIndex>>,
    /// (namespace, label key, label value) → pods carrying that label.
    pods_by_label: HashMap<(String, String, String), HashSet<NodeIndex>>,
    /// (namespace, label key, label value) → InferencePools whose selector's first label it is.
    /// A pod's candidate pools are found through its own labels, so a pod change costs what the
    /// pools that may select it cost, not the number of pools in the namespace.
    pools_by_label: HashMap<(String, String, String), HashSet<NodeIndex>>,
    /// (namespace, Service name) → the EndpointSlices labelled as that Service's.
    slices_by_service: HashMap<(String, String), HashSet<NodeIndex>>,
    /// Kinds the source cannot have (a CRD not installed), with why: a missing reference to one
    /// says so.
    missing_kinds: HashMap<Kind, String>,
    /// ReferenceGrants and references across namespaces (see `grants.rs`).
    grants: grants::Grants,
    /// The GatewayClass `controllerName` whose Gateways are aixds's; `None`: every Gateway is.
    controller: Option<String>,
}

/// Takes `idx` out of the set `index[entry]`, and the set out of the index once empty.
fn unindex_in<K: std::hash::Hash + Eq>(
    index: &mut HashMap<K, HashSet<NodeIndex>>,
    entry: &K,
    idx: NodeIndex,
) {
    if let Some(set) = index.get_mut(entry) {
        set.remove(&idx);
        if set.is_empty() {
            index.remove(entry);
        }
    }
}

/// The Service an EndpointSlice belongs to, by its `kubernetes.io/service-name` label.
fn slice_service(slice: &Object) -> Option<(String, String)> {
    let name = slice.labels.get(crate::api::SERVICE_NAME_LABEL)?;
    Some((slice.key.namespace.clone(), name.clone()))
}

/// The index key of a pool: its namespace and the first label of its selector.
fn pool_label(ns: &str, pool: &crate::api::InferencePoolSpec) -> Option<(String, String, String)> {
    let (k, v) = pool.selector.match_labels.iter().next()?;
    Some((ns.to_string(), k.clone(), v.clone()))
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// A graph that takes as its own only the Gateways whose GatewayClass names `controller`
    /// (`None`: every Gateway, as with manifest files the user chose).
    pub fn with_controller(controller: Option<String>) -> Self {
        Graph { controller, ..Self::default() }
    }

    /// Whether the Gateway `key` is aixds's to program and report on: every Gateway when the
    /// graph has no controller name, else those whose GatewayClass exists and names it.
    pub fn owns_gateway(&self, key: &ObjectKey) -> bool {
        let Some(controller) = &self.controller else { return true };
        let Some(Spec::Gateway(gateway)) = self.object(key).map(|o| &o.spec) else { return false };
        let class = ObjectKey::new(Kind::GatewayClass, "", &gateway.gateway_class_name);
        matches!(self.object(&class).map(|o| &o.spec),
            Some(Spec::GatewayClass(c)) if c.controller_name == *controller)
    }

    /// The GatewayClass `controllerName` whose Gateways are aixds's, if the graph has one.
    pub fn controller(&self) -> Option<&str> {
        self.controller.as_deref()
    }

    /// Whether the GatewayClass `key` is aixds's (see [`Graph::owns_gateway`]).
    pub fn owns_class(&self, key: &ObjectKey) -> bool {
        match (&self.controller, self.object(key).map(|o| &o.spec)) {
            (_, None) => false,
            (None, _) => true,
            (Some(controller), Some(Spec::GatewayClass(c))) => c.controller_name == *controller,
            (Some(_), Some(_)) => false,
        }
    }

    /// The objects status about which is another controller's to write: Gateways and
    /// GatewayClasses of another controller, routes all of whose parents are such Gateways, and
    /// what serves only those (backends, pools, policies, Secrets, ...). Objects attached to no
    /// Gateway at all are aixds's to report on. Empty without a controller name. One pass over
    /// the graph: what the foreign anchors reach, less what aixds's own reach.
    pub fn foreign_objects(&self) -> HashSet<ObjectKey> {
        if self.controller.is_none() {
            return HashSet::new();
        }
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for idx in self.g.node_indices() {
            let key = &self.g[idx].key;
            let owned = match key.kind {
                Kind::GatewayClass => self.owns_class(key),
                Kind::Gateway => self.owns_gateway(key),
                Kind::AIGatewayRoute | Kind::HTTPRoute => {
                    let parents = self.g[idx].parents.as_slice();
                    parents.is_empty() || parents.iter().any(|p| !p.foreign)
                }
                _ => continue,
            };
            if self.g[idx].object.is_some() {
                if owned { ours.push(idx) } else { theirs.push(idx) }
            }
        }
        let ours = self.served_by(ours);
        self.served_by(theirs)
            .into_iter()
            .filter(|idx| !ours.contains(idx))
            .map(|idx| self.g[idx].key.clone())
            .collect()
    }

    /// `roots` and what they rely on: what they reference (a route's parent Gateway aside),
    /// and the policies targeting any of those, transitively.
    fn served_by(&self, roots: Vec<NodeIndex>) -> HashSet<NodeIndex> {
        let mut seen: HashSet<NodeIndex> = roots.iter().copied().collect();
        let mut stack = roots;
        while let Some(idx) = stack.pop() {
            let next = self
                .g
                .edges_directed(idx, Direction::Outgoing)
                .filter(|e| !matches!(e.weight(), RefKind::ParentRef | RefKind::Selects))
                .map(|e| e.target())
                .chain(
                    self.g
                        .edges_directed(idx, Direction::Incoming)
                        .filter(|e| *e.weight() == RefKind::TargetRef)
                        .map(|e| e.source()),
                );
            for n in next.collect::<Vec<_>>() {
                if seen.insert(n) {
                    stack.push(n);
                }
            }
        }
        seen
    }

    /// Adds or replaces an object and returns what it affects.
    pub fn apply(&mut self, object: Object) -> Affected {
        self.apply_with_conflict(object, None)
    }

    /// As [`Graph::apply`], recording that the source holds conflicting definitions of the object
    /// (`conflict` says where). The object given (the source's first definition) is used as
    /// usual, so that neither its dependents nor its neighbours change; its `Accepted` condition
    /// reports the conflict.
    pub fn apply_with_conflict(&mut self, object: Object, conflict: Option<String>) -> Affected {
        let idx = self.ensure_node(&object.key);
        let mut previous = self.unindex(idx);
        // A policy that stops targeting an object changes that object's conditions too.
        previous.extend(
            self.g
                .edges_directed(idx, Direction::Outgoing)
                .filter(|e| *e.weight() == RefKind::TargetRef)
                .map(|e| e.target()),
        );
        let (targets, issues) = refs::references(&object);
        self.g[idx].object = Some(Arc::new(object));
        self.g[idx].issues = issues;
        self.g[idx].conflict = conflict;
        self.set_outgoing(idx, targets);
        self.index_selection(idx);
        previous.extend(self.index_grant(idx));
        let affected = self.affected_from(idx, &previous);
        self.recompute_conditions(&affected);
        self.to_keys(&affected)
    }

    /// Removes an object. If others still reference it, it stays as a placeholder so that they
    /// report the missing reference.
    pub fn delete(&mut self, key: &ObjectKey) -> Affected {
        let Some(&idx) = self.index.get(key) else { return Affected::default() };
        if self.g[idx].object.is_none() {
            return Affected::default();
        }
        let old_pools = self.unindex(idx);
        let affected = self.affected_from(idx, &old_pools);
        // Before the edges go: dropping them removes orphaned placeholders, which the affected
        // set may hold (a route's missing Gateway).
        let keys = self.to_keys(&affected);
        self.g[idx].object = None;
        self.g[idx].issues.clear();
        self.g[idx].conflict = None;
        self.set_outgoing(idx, Vec::new());
        self.remove_if_orphan(idx);
        let live: Vec<NodeIndex> =
            affected.into_iter().filter(|i| self.g.contains_node(*i)).collect();
        self.recompute_conditions(&live);
        keys
    }

    /// Records that the source cannot have objects of `kind` (`message` says why), or can again
    /// (`None`). Returns what references a missing object of that kind: its conditions change.
    pub fn set_kind_missing(&mut self, kind: Kind, message: Option<String>) -> Affected {
        let changed = match message {
            Some(m) => self.missing_kinds.insert(kind, m.clone()) != Some(m),
            None => self.missing_kinds.remove(&kind).is_some(),
        };
        if !changed {
            return Affected::default();
        }
        let placeholders: Vec<NodeIndex> = self
            .index
            .iter()
            .filter(|(k, i)| k.kind == kind && self.g[**i].object.is_none())
            .map(|(_, i)| *i)
            .collect();
        let mut affected = Vec::new();
        for idx in placeholders {
            for node in self.affected_from(idx, &[]) {
                if !affected.contains(&node) {
                    affected.push(node);
                }
            }
        }
        self.recompute_conditions(&affected);
        self.to_keys(&affected)
    }

    /// Why the BackendSecurityPolicy `key` gives no credential (a field is wrong, it asks for
    /// what aixds does not do yet, its Secret is missing or holds nothing usable), if it gives
    /// none. Never quotes a secret value.
    pub fn policy_problem(&self, key: &ObjectKey) -> Option<String> {
        let idx = *self.index.get(key)?;
        refs::policy_problem(self, idx).map(|(_, message)| message)
    }

    /// Whether a BackendSecurityPolicy targeting `backend` (an AIServiceBackend or
    /// InferencePool) gives no credential, so that requests to it are refused.
    pub fn credential_refused(&self, backend: &ObjectKey) -> bool {
        self.index.get(backend).is_some_and(|idx| !refs::credential_problems(self, *idx).is_empty())
    }

    /// Why the source cannot have objects of `kind`, if it cannot.
    pub fn kind_missing(&self, kind: Kind) -> Option<&str> {
        self.missing_kinds.get(&kind).map(String::as_str)
    }

    pub fn node(&self, key: &ObjectKey) -> Option<&Node> {
        self.index.get(key).map(|i| &self.g[*i])
    }

    pub fn object(&self, key: &ObjectKey) -> Option<&Arc<Object>> {
        self.node(key).and_then(|n| n.object.as_ref())
    }

    /// All nodes (objects and placeholders), in key order.
    pub fn nodes(&self) -> Vec<&Node> {
        let mut nodes: Vec<&Node> = self.g.node_weights().collect();
        nodes.sort_by(|a, b| a.key.cmp(&b.key));
        nodes
    }

    /// Objects that are present (not placeholders), in key order.
    pub fn objects(&self) -> impl Iterator<Item = &Arc<Object>> {
        self.nodes().into_iter().filter_map(|n| n.object.as_ref())
    }

    pub fn len(&self) -> usize {
        self.g.node_count()
    }

    pub fn edge_count(&self) -> usize {
        self.g.edge_count()
    }

    pub fn is_empty(&self) -> bool {
        self.g.node_count() == 0
    }

    /// What `key` references: (reference kind, target node).
    pub fn references(&self, key: &ObjectKey) -> Vec<(RefKind, &Node)> {
        self.neighbours(key, Direction::Outgoing)
    }

    /// What references `key`: (reference kind, referrer node).
    pub fn referrers(&self, key: &ObjectKey) -> Vec<(RefKind, &Node)> {
        self.neighbours(key, Direction::Incoming)
    }

    /// The policies targeting `key` (its `TargetRef` referrers), by key. Costs what they are,
    /// not what refers to `key`.
    pub fn targeting(&self, key: &ObjectKey) -> Vec<&Node> {
        let Some(policies) = self.index.get(key).and_then(|idx| self.targeted_by.get(idx)) else {
            return Vec::new();
        };
        let mut out: Vec<&Node> = policies.iter().map(|p| &self.g[*p]).collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Every edge as (from, kind, to), in order.
    pub fn edges(&self) -> Vec<(&ObjectKey, RefKind, &ObjectKey)> {
        let mut edges: Vec<_> = self
            .g
            .edge_references()
            .map(|e| (&self.g[e.source()].key, *e.weight(), &self.g[e.target()].key))
            .collect();
        edges.sort();
        edges
    }

    fn neighbours(&self, key: &ObjectKey, dir: Direction) -> Vec<(RefKind, &Node)> {
        let Some(&idx) = self.index.get(key) else { return Vec::new() };
        let mut out: Vec<_> = self
            .g
            .edges_directed(idx, dir)
            .map(|e| {
                let other = if dir == Direction::Outgoing { e.target() } else { e.source() };
                (*e.weight(), &self.g[other])
            })
            .collect();
        out.sort_by(|a, b| (a.0, &a.1.key).cmp(&(b.0, &b.1.key)));
        out
    }

    fn ensure_node(&mut self, key: &ObjectKey) -> NodeIndex {
        if let Some(&idx) = self.index.get(key) {
            return idx;
        }
        let idx = self.g.add_node(Node {
            key: key.clone(),
            object: None,
            issues: Vec::new(),
            conflict: None,
            conditions: Vec::new(),
            parents: Vec::new(),
        });
        self.index.insert(key.clone(), idx);
        idx
    }

    fn remove_if_orphan(&mut self, idx: NodeIndex) {
        let node = &self.g[idx];
        if node.object.is_none() && self.g.edges_directed(idx, Direction::Incoming).next().is_none()
        {
            let key = node.key.clone();
            self.g.remove_node(idx);
            self.index.remove(&key);
        }
    }

    /// Replaces the node's declared references (all but pod selection) with `targets`.
    fn set_outgoing(&mut self, idx: NodeIndex, targets: Vec<(RefKind, ObjectKey)>) {
        self.index_references(idx, &targets);
        let wanted: HashSet<(RefKind, NodeIndex)> =
            targets.iter().map(|(kind, key)| (*kind, self.ensure_node(key))).collect();
        // Edges that stay are left alone: unlinking an edge walks its target's edge list, which
        // for a Gateway holds every route attached to it.
        let stale: Vec<(EdgeIndex, NodeIndex)> = self
            .g
            .edges_directed(idx, Direction::Outgoing)
            .filter(|e| *e.weight() != RefKind::Selects)
            .filter(|e| !wanted.contains(&(*e.weight(), e.target())))
            .map(|e| (e.id(), e.target()))
            .collect();
        for (edge, target) in &stale {
            if self.g.edge_weight(*edge) == Some(&RefKind::TargetRef)
                && let Some(policies) = self.targeted_by.get_mut(target)
            {
                policies.retain(|p| *p != idx);
                if policies.is_empty() {
                    self.targeted_by.remove(target);
                }
            }
            self.g.remove_edge(*edge);
        }
        for (kind, target) in wanted {
            let exists = self
                .g
                .edges_directed(idx, Direction::Outgoing)
                .any(|e| *e.weight() == kind && e.target() == target);
            if !exists {
                self.g.add_edge(idx, target, kind);
                if kind == RefKind::TargetRef {
                    self.targeted_by.entry(target).or_default().push(idx);
                }
            }
        }
        for (_, target) in stale {
            if target != idx {
                self.remove_if_orphan(target);
            }
        }
    }

    /// Takes a Pod or InferencePool out of the selection indexes and drops its selection edges,
    /// or a ReferenceGrant out of the grant index. Returns what the node's change affects
    /// besides its referrers: the pools that selected a Pod, the referrers a grant permitted.
    fn unindex(&mut self, idx: NodeIndex) -> Vec<NodeIndex> {
        let Some(object) = self.g[idx].object.clone() else { return Vec::new() };
        let ns = &object.key.namespace;
        match &object.spec {
            Spec::Pod(_) => {
                for (k, v) in &object.labels {
                    let entry = (ns.clone(), k.clone(), v.clone());
                    unindex_in(&mut self.pods_by_label, &entry, idx);
                }
                self.drop_selection(idx, Direction::Incoming)
            }
            Spec::InferencePool(pool) => {
                if let Some(entry) = pool_label(ns, pool) {
                    unindex_in(&mut self.pools_by_label, &entry, idx);
                }
                self.drop_selection(idx, Direction::Outgoing);
                Vec::new()
            }
            Spec::EndpointSlice(_) => {
                if let Some(entry) = slice_service(&object) {
                    unindex_in(&mut self.slices_by_service, &entry, idx);
                }
                self.drop_selection(idx, Direction::Incoming)
            }
            Spec::Service(_) => {
                self.drop_selection(idx, Direction::Outgoing);
                Vec::new()
            }
            Spec::ReferenceGrant(_) => self.unindex_grant(idx),
            _ => Vec::new(),
        }
    }

    /// Removes the `Selects` edges of `idx` in `direction` (a pool's or Service's outgoing ones,
    /// a Pod's or EndpointSlice's incoming ones); returns the nodes at their other ends.
    fn drop_selection(&mut self, idx: NodeIndex, direction: Direction) -> Vec<NodeIndex> {
        let edges: Vec<(EdgeIndex, NodeIndex)> = self
            .g
            .edges_directed(idx, direction)
            .filter(|e| *e.weight() == RefKind::Selects)
            .map(|e| {
                (e.id(), if direction == Direction::Incoming { e.source() } else { e.target() })
            })
            .collect();
        edges
            .into_iter()
            .map(|(e, other)| {
                self.g.remove_edge(e);
                other
            })
            .collect()
    }

    /// Indexes a Pod, InferencePool or EndpointSlice and wires the selection edges (pool → pod,
    /// Service → slice).
    fn index_selection(&mut self, idx: NodeIndex) {
        let Some(object) = self.g[idx].object.clone() else { return };
        let ns = &object.key.namespace;
        match &object.spec {
            Spec::Pod(_) => {
                for (k, v) in &object.labels {
                    self.pods_by_label
                        .entry((ns.clone(), k.clone(), v.clone()))
                        .or_default()
                        .insert(idx);
                }
                let mut pools: Vec<NodeIndex> = object
                    .labels
                    .iter()
                    .filter_map(|(k, v)| {
                        self.pools_by_label.get(&(ns.clone(), k.clone(), v.clone()))
                    })
                    .flatten()
                    .copied()
                    .filter(|p| match self.g[*p].object.as_deref().map(|o| &o.spec) {
                        Some(Spec::InferencePool(pool)) => pool.selects(&object.labels),
                        _ => false,
                    })
                    .collect();
                pools.sort();
                pools.dedup();
                for pool in pools {
                    self.g.add_edge(pool, idx, RefKind::Selects);
                }
            }
            Spec::InferencePool(pool) => {
                // Candidates carry the first selector label; the rest are checked per pod.
                let Some(entry) = pool_label(ns, pool) else { return };
                self.pools_by_label.entry(entry.clone()).or_default().insert(idx);
                let pods: Vec<NodeIndex> = self
                    .pods_by_label
                    .get(&entry)
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|p| self.g[*p].object.as_ref().is_some_and(|o| pool.selects(&o.labels)))
                    .collect();
                for pod in pods {
                    self.g.add_edge(idx, pod, RefKind::Selects);
                }
            }
            Spec::EndpointSlice(_) => {
                let Some(entry) = slice_service(&object) else { return };
                let service = ObjectKey::new(Kind::Service, &entry.0, &entry.1);
                self.slices_by_service.entry(entry).or_default().insert(idx);
                if let Some(&svc) = self.index.get(&service)
                    && self.g[svc].object.is_some()
                {
                    self.g.add_edge(svc, idx, RefKind::Selects);
                }
            }
            Spec::Service(_) => {
                let entry = (ns.clone(), object.key.name.clone());
                let slices: Vec<NodeIndex> =
                    self.slices_by_service.get(&entry).into_iter().flatten().copied().collect();
                for slice in slices {
                    self.g.add_edge(idx, slice, RefKind::Selects);
                }
            }
            _ => {}
        }
    }

    /// The changed node, everything that transitively references it, the targets of policies
    /// among those, and the parents of routes among those (not expanded further).
    fn affected_from(&self, start: NodeIndex, extra: &[NodeIndex]) -> Vec<NodeIndex> {
        let mut seen: HashSet<NodeIndex> = HashSet::new();
        let mut order = Vec::new();
        let mut stack: Vec<NodeIndex> = Vec::with_capacity(8);
        stack.push(start);
        stack.extend(extra.iter().copied().filter(|i| self.g.contains_node(*i)));
        while let Some(idx) = stack.pop() {
            if !seen.insert(idx) {
                continue;
            }
            order.push(idx);
            for e in self.g.edges_directed(idx, Direction::Incoming) {
                stack.push(e.source());
            }
            for e in self.g.edges_directed(idx, Direction::Outgoing) {
                match e.weight() {
                    RefKind::TargetRef => stack.push(e.target()),
                    RefKind::ParentRef if seen.insert(e.target()) => order.push(e.target()),
                    _ => {}
                }
            }
        }
        order
    }

    fn to_keys(&self, nodes: &[NodeIndex]) -> Affected {
        Affected { keys: nodes.iter().map(|i| self.g[*i].key.clone()).collect() }
    }

    fn recompute_conditions(&mut self, nodes: &[NodeIndex]) {
        // Backends first: a route's conditions read its backends' resolution.
        let (backends, rest): (Vec<NodeIndex>, Vec<NodeIndex>) =
            nodes.iter().partition(|i| !self.g[**i].key.kind.is_route());
        for idx in backends.into_iter().chain(rest) {
            if self.g[idx].key.kind.is_route() {
                let parents = listeners::route_parents(self, &self.g[idx].key);
                self.g[idx].parents = parents;
            }
            let conditions = refs::conditions(self, idx);
            self.g[idx].conditions = conditions;
        }
    }
}
