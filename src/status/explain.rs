//! `aixds explain`: why one object is or is not serving, as text for a person.
//!
//! Takes: the graph, the conditions from outside it (Envoy rejections), and the resources
//! compiled from the object with each Envoy's state. Gives: its conditions, each reference with
//! whether it resolves, its referrers, and the Envoy resources it produced.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{Delivery, Produced};
use crate::api::{Kind, ObjectKey};
use crate::cli::condition_line;
use crate::graph::export::{NotInGraph, View};
use crate::graph::listeners::listeners;
use crate::graph::{Condition, Graph, Node};

pub fn explain(
    graph: &Graph,
    key: &ObjectKey,
    extra: BTreeMap<ObjectKey, Vec<Condition>>,
    produced: &[Produced],
    locations: &[String],
) -> Result<String, NotInGraph> {
    let node = graph.node(key).ok_or_else(|| NotInGraph(key.clone()))?;
    let view = View::default().with_extra(extra);
    let mut out = String::new();
    let w = &mut out;
    if locations.is_empty() {
        let _ = writeln!(w, "{key}");
    } else {
        let _ = writeln!(w, "{key} ({})", locations.join(", "));
    }
    if node.is_placeholder() {
        let _ = writeln!(w, "  does not exist: it is only referenced (a placeholder)");
    }
    let conditions = view.conditions(node);
    let _ = writeln!(w, "Conditions:");
    if conditions.is_empty() {
        let _ = writeln!(w, "  (none)");
    }
    for c in conditions.iter() {
        let _ = writeln!(w, "  {}", condition_line(c));
    }
    if key.kind == Kind::Gateway && !graph.owns_gateway(key) {
        let _ =
            writeln!(w, "  not programmed: its GatewayClass is missing or another controller's");
    }
    let listeners = listeners(graph, key);
    if !listeners.is_empty() {
        let _ = writeln!(w, "Listeners:");
    }
    for l in &listeners {
        let host = l.spec.hostname.as_deref().unwrap_or("*");
        let _ = writeln!(w, "  {} ({} {host}:{})", l.spec.name, l.spec.protocol, l.spec.port);
        for c in &l.conditions {
            let _ = writeln!(w, "    {}", condition_line(c));
        }
    }
    let references = graph.references(key);
    let unresolved: Vec<_> =
        references.iter().filter(|(_, n)| n.is_placeholder() || !n.accepted()).collect();
    let _ = writeln!(w, "References ({} unresolved):", unresolved.len());
    if references.is_empty() {
        let _ = writeln!(w, "  (none)");
    }
    for (kind, target) in &references {
        let _ = writeln!(w, "  {} -> {} [{}]", kind.as_str(), target.key, state(target, &view));
    }
    let referrers = graph.referrers(key);
    let _ = writeln!(w, "Referred to by:");
    if referrers.is_empty() {
        let _ = writeln!(w, "  (none)");
    }
    for (kind, from) in &referrers {
        let _ = writeln!(w, "  {} ({}) [{}]", from.key, kind.as_str(), state(from, &view));
    }
    let _ = writeln!(w, "Envoy resources produced:");
    if produced.is_empty() {
        let _ = writeln!(w, "  (none)");
    }
    for p in produced {
        let short = p.version.get(..8).unwrap_or(&p.version);
        let _ = writeln!(w, "  {} {} (version {short}, {} bytes)", p.type_url, p.name, p.size);
        for e in &p.envoys {
            let state = match e.state {
                Delivery::Acked => "ACKed",
                Delivery::Rejected => "REJECTED",
                Delivery::Outdated => "holds an older version",
                Delivery::Pending => "not ACKed yet",
            };
            let _ = writeln!(w, "    {}: {state}", e.node_id);
        }
    }
    Ok(out)
}

fn state(node: &Node, view: &View) -> &'static str {
    if node.is_placeholder() {
        "missing"
    } else if view.conditions(node).iter().all(|c| c.is_good()) {
        "ok"
    } else if !node.accepted() {
        "not accepted"
    } else {
        "failing"
    }
}
