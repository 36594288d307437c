//! The graph as data for people and tools: JSON and Graphviz DOT, whole or narrowed to one
//! object's neighbourhood, with conditions reported from outside the graph (an Envoy's rejection
//! of what an object compiled to) merged into the objects' own.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::Serialize;

use super::{Condition, Graph, Node};
use crate::api::{Kind, ObjectKey};

#[derive(Serialize)]
pub struct NodeJson<'a> {
    pub key: &'a ObjectKey,
    pub kind: &'static str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub placeholder: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    pub conditions: Cow<'a, [Condition]>,
    /// A Gateway's listeners, each with its own conditions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerJson<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerJson<'a> {
    pub name: &'a str,
    pub protocol: &'a str,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<&'a str>,
    pub conditions: Vec<Condition>,
}

#[derive(Serialize)]
pub struct EdgeJson<'a> {
    pub from: &'a ObjectKey,
    pub to: &'a ObjectKey,
    pub kind: &'static str,
}

#[derive(Serialize)]
pub struct GraphJson<'a> {
    pub nodes: Vec<NodeJson<'a>>,
    pub edges: Vec<EdgeJson<'a>>,
}

/// Which part of the graph to export, and what to add to it.
#[derive(Debug, Default, Clone)]
pub struct View {
    /// Only these nodes and the edges between them; `None` exports everything.
    pub keep: Option<BTreeSet<ObjectKey>>,
    /// Conditions from outside the graph, per object. One replaces the object's own condition of
    /// the same type when that one is True (an object the graph accepts but an Envoy rejected is
    /// not accepted); otherwise it is added.
    pub extra: BTreeMap<ObjectKey, Vec<Condition>>,
}

/// `focus` names an object the graph does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not in the graph")]
pub struct NotInGraph(pub ObjectKey);

impl View {
    /// The objects within `depth` references of `focus`, following references both ways.
    pub fn focus(graph: &Graph, focus: &ObjectKey, depth: usize) -> Result<View, NotInGraph> {
        if graph.node(focus).is_none() {
            return Err(NotInGraph(focus.clone()));
        }
        let mut keep = BTreeSet::from([focus.clone()]);
        let mut queue = VecDeque::from([(focus.clone(), 0)]);
        while let Some((key, d)) = queue.pop_front() {
            if d == depth {
                continue;
            }
            let next = graph.references(&key).into_iter().chain(graph.referrers(&key));
            for (_, node) in next {
                if keep.insert(node.key.clone()) {
                    queue.push_back((node.key.clone(), d + 1));
                }
            }
        }
        Ok(View { keep: Some(keep), extra: BTreeMap::new() })
    }

    pub fn with_extra(mut self, extra: BTreeMap<ObjectKey, Vec<Condition>>) -> View {
        self.extra = extra;
        self
    }

    pub fn includes(&self, key: &ObjectKey) -> bool {
        self.keep.as_ref().is_none_or(|k| k.contains(key))
    }

    /// The node's conditions with the extra ones merged in.
    pub fn conditions<'n>(&self, node: &'n Node) -> Cow<'n, [Condition]> {
        let Some(extra) = self.extra.get(&node.key).filter(|e| !e.is_empty()) else {
            return Cow::Borrowed(node.conditions());
        };
        let mut merged = node.conditions().to_vec();
        for c in extra {
            match merged.iter_mut().find(|m| m.type_ == c.type_ && m.is_good()) {
                Some(m) => *m = c.clone(),
                None => merged.push(c.clone()),
            }
        }
        Cow::Owned(merged)
    }

    /// The nodes this view exports, in key order.
    pub fn nodes<'g>(&self, graph: &'g Graph) -> Vec<&'g Node> {
        graph.nodes().into_iter().filter(|n| self.includes(&n.key)).collect()
    }
}

pub fn node_json<'g>(graph: &'g Graph, n: &'g Node) -> NodeJson<'g> {
    let listeners = match n.key.kind {
        Kind::Gateway => super::listeners::listeners(graph, &n.key)
            .into_iter()
            .map(|l| ListenerJson {
                name: &l.spec.name,
                protocol: &l.spec.protocol,
                port: l.spec.port,
                hostname: l.spec.hostname.as_deref(),
                conditions: l.conditions,
            })
            .collect(),
        _ => Vec::new(),
    };
    NodeJson {
        key: &n.key,
        kind: n.key.kind.as_str(),
        namespace: &n.key.namespace,
        name: &n.key.name,
        placeholder: n.is_placeholder(),
        generation: n.object.as_ref().map(|o| o.generation),
        conditions: Cow::Borrowed(n.conditions()),
        listeners,
    }
}

pub fn to_json(graph: &Graph) -> GraphJson<'_> {
    to_json_view(graph, &View::default())
}

pub fn to_json_view<'g>(graph: &'g Graph, view: &View) -> GraphJson<'g> {
    GraphJson {
        nodes: view
            .nodes(graph)
            .into_iter()
            .map(|n| NodeJson { conditions: view.conditions(n), ..node_json(graph, n) })
            .collect(),
        edges: graph
            .edges()
            .into_iter()
            .filter(|(from, _, to)| view.includes(from) && view.includes(to))
            .map(|(from, kind, to)| EdgeJson { from, to, kind: kind.as_str() })
            .collect(),
    }
}

pub fn to_dot(graph: &Graph) -> String {
    to_dot_view(graph, &View::default())
}

/// Graphviz DOT: nodes are green when accepted and resolved, red when not, dashed grey for
/// placeholders; edges are labelled with the referencing field.
pub fn to_dot_view(graph: &Graph, view: &View) -> String {
    let mut out =
        String::from("digraph aixds {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n");
    for n in view.nodes(graph) {
        let (style, color) = if n.is_placeholder() {
            ("dashed", "grey")
        } else if view.conditions(n).iter().all(|c| c.is_good()) {
            ("rounded", "darkgreen")
        } else {
            ("\"rounded,bold\"", "red")
        };
        let label = if n.key.namespace.is_empty() {
            format!("{}\\n{}", n.key.kind, n.key.name)
        } else {
            format!("{}\\n{}/{}", n.key.kind, n.key.namespace, n.key.name)
        };
        out.push_str(&format!(
            "  {} [label={}, style={style}, color={color}];\n",
            quote(&n.key.to_string()),
            quote(&label).replace("\\\\n", "\\n")
        ));
    }
    for (from, kind, to) in graph.edges() {
        if !(view.includes(from) && view.includes(to)) {
            continue;
        }
        out.push_str(&format!(
            "  {} -> {} [label={}];\n",
            quote(&from.to_string()),
            quote(&to.to_string()),
            quote(kind.as_str())
        ));
    }
    out.push_str("}\n");
    out
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
