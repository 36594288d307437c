//! ReferenceGrants: which references across namespaces are permitted, and who must hear of it
//! when a grant changes.
//!
//! Two indexes, both by the namespace references point into: the grants there, so that a check
//! reads only the grants of the target's namespace, and the objects elsewhere that reference
//! something there, so that a grant's change finds the referrers it may permit (or stop
//! permitting) without scanning the graph. A referrer is in that set while it has an edge
//! into the namespace, whatever the edge's target, placeholder or object.

use std::collections::{HashMap, HashSet};

use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;

use super::{Graph, RefKind};
use crate::api::{ObjectKey, ReferenceGrantSpec, Spec};

#[derive(Debug, Default)]
pub(super) struct Grants {
    /// Namespace → the ReferenceGrants in it.
    grants: HashMap<String, HashSet<NodeIndex>>,
    /// Namespace → the objects in other namespaces with a reference into it.
    referrers: HashMap<String, HashSet<NodeIndex>>,
}

impl Graph {
    /// Whether `from` may reference `to`: always within a namespace; across namespaces only
    /// when a ReferenceGrant in `to`'s namespace lets `from`'s kind and namespace reference
    /// `to`'s kind (and name, when the grant names one).
    pub fn reference_permitted(&self, from: &ObjectKey, to: &ObjectKey) -> bool {
        if from.namespace == to.namespace {
            return true;
        }
        self.grants
            .grants
            .get(&to.namespace)
            .into_iter()
            .flatten()
            .any(|idx| grant_spec(self, *idx).is_some_and(|grant| permits(grant, from, to)))
    }

    /// Records `idx`'s references (`targets`, before its edges are replaced with them) in the
    /// index of references across namespaces.
    pub(super) fn index_references(&mut self, idx: NodeIndex, targets: &[(RefKind, ObjectKey)]) {
        let own = self.g[idx].key.namespace.clone();
        let before: HashSet<String> = self
            .g
            .edges_directed(idx, Direction::Outgoing)
            .map(|e| self.g[e.target()].key.namespace.clone())
            .filter(|ns| *ns != own)
            .collect();
        let after: HashSet<String> =
            targets.iter().map(|(_, key)| key.namespace.clone()).filter(|ns| *ns != own).collect();
        for ns in before.difference(&after) {
            if let Some(set) = self.grants.referrers.get_mut(ns) {
                set.remove(&idx);
                if set.is_empty() {
                    self.grants.referrers.remove(ns);
                }
            }
        }
        for ns in after.difference(&before) {
            self.grants.referrers.entry(ns.clone()).or_default().insert(idx);
        }
    }

    /// Adds the object at `idx` to the index if it is a ReferenceGrant; returns the referrers
    /// it permits.
    pub(super) fn index_grant(&mut self, idx: NodeIndex) -> Vec<NodeIndex> {
        if grant_spec(self, idx).is_none() {
            return Vec::new();
        }
        let ns = self.g[idx].key.namespace.clone();
        self.grants.grants.entry(ns).or_default().insert(idx);
        self.granted_referrers(idx)
    }

    /// Takes the ReferenceGrant at `idx` out of the index; returns the referrers it permitted.
    pub(super) fn unindex_grant(&mut self, idx: NodeIndex) -> Vec<NodeIndex> {
        let referrers = self.granted_referrers(idx);
        let ns = self.g[idx].key.namespace.clone();
        if let Some(set) = self.grants.grants.get_mut(&ns) {
            set.remove(&idx);
            if set.is_empty() {
                self.grants.grants.remove(&ns);
            }
        }
        referrers
    }

    /// The objects with a reference into the grant's namespace that the grant at `idx` permits.
    fn granted_referrers(&self, idx: NodeIndex) -> Vec<NodeIndex> {
        let Some(grant) = grant_spec(self, idx) else { return Vec::new() };
        let ns = &self.g[idx].key.namespace;
        let mut out: Vec<NodeIndex> = self
            .grants
            .referrers
            .get(ns)
            .into_iter()
            .flatten()
            .copied()
            .filter(|referrer| {
                let from = &self.g[*referrer].key;
                self.g.edges_directed(*referrer, Direction::Outgoing).any(|e| {
                    let to = &self.g[e.target()].key;
                    to.namespace == *ns && permits(grant, from, to)
                })
            })
            .collect();
        out.sort();
        out
    }
}

fn grant_spec(graph: &Graph, idx: NodeIndex) -> Option<&ReferenceGrantSpec> {
    match &graph.g[idx].object.as_deref()?.spec {
        Spec::ReferenceGrant(grant) => Some(grant),
        _ => None,
    }
}

fn permits(grant: &ReferenceGrantSpec, from: &ObjectKey, to: &ObjectKey) -> bool {
    grant.permits(
        (from.kind.group(), from.kind.as_str()),
        &from.namespace,
        (to.kind.group(), to.kind.as_str()),
        &to.name,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Kind, Object, ParseOutcome, parse_document};

    fn parse(doc: &str) -> Object {
        match parse_document(doc).unwrap() {
            ParseOutcome::Object(o) => *o,
            other => panic!("{other:?}"),
        }
    }

    fn gateway(secret_namespace: &str) -> Object {
        parse(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {{name: gw, namespace: a}}\n\
             spec: {{listeners: [{{name: https, port: 443, protocol: HTTPS, \
             tls: {{certificateRefs: [{{name: cert, namespace: {secret_namespace}}}]}}}}]}}"
        ))
    }

    fn grant(from_kind: &str, to_name: &str) -> Object {
        parse(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\n\
             metadata: {{name: g, namespace: b}}\n\
             spec: {{from: [{{group: gateway.networking.k8s.io, kind: {from_kind}, namespace: a}}], \
             to: [{{group: '', kind: Secret, name: {to_name}}}]}}"
        ))
    }

    #[test]
    fn a_grant_permits_a_reference_and_its_changes_reach_the_referrer() {
        let gw = ObjectKey::new(Kind::Gateway, "a", "gw");
        let cert = ObjectKey::new(Kind::Secret, "b", "cert");
        let grant_key = ObjectKey::new(Kind::ReferenceGrant, "b", "g");
        let mut graph = Graph::new();
        graph.apply(gateway("b"));
        assert!(!graph.reference_permitted(&gw, &cert));
        assert!(graph.reference_permitted(&gw, &ObjectKey::new(Kind::Secret, "a", "cert")));

        let affected = graph.apply(grant("Gateway", "cert"));
        assert!(affected.contains(&gw), "{affected:?}");
        assert!(graph.reference_permitted(&gw, &cert));
        assert!(!graph.reference_permitted(&gw, &ObjectKey::new(Kind::Secret, "b", "other")));

        // Narrowed to another Secret: the old version permitted the Gateway, so it hears.
        let affected = graph.apply(grant("Gateway", "other"));
        assert!(affected.contains(&gw), "{affected:?}");
        assert!(!graph.reference_permitted(&gw, &cert));
        // Neither version permits it: it does not hear.
        let affected = graph.apply(grant("HTTPRoute", "cert"));
        assert!(!affected.contains(&gw), "{affected:?}");

        graph.apply(grant("Gateway", "cert"));
        let affected = graph.delete(&grant_key);
        assert!(affected.contains(&gw), "{affected:?}");
        assert!(!graph.reference_permitted(&gw, &cert));

        // A Gateway that no longer references into b is not among b's referrers.
        graph.apply(gateway("a"));
        let affected = graph.apply(grant("Gateway", "cert"));
        assert!(!affected.contains(&gw), "{affected:?}");
        assert!(graph.grants.referrers.is_empty());
        graph.delete(&grant_key);
        assert!(graph.grants.grants.is_empty());
    }
}
