//! The graph as data for people and tools: JSON and Graphviz DOT.

use serde::Serialize;

use super::{Condition, Graph, Node};
use crate::api::ObjectKey;

#[derive(Serialize)]
pub struct NodeJson<'a> {
    pub key: &'a ObjectKey,
    pub kind: &'static str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub placeholder: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    pub conditions: &'a [Condition],
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

pub fn node_json(n: &Node) -> NodeJson<'_> {
    NodeJson {
        key: &n.key,
        kind: n.key.kind.as_str(),
        namespace: &n.key.namespace,
        name: &n.key.name,
        placeholder: n.is_placeholder(),
        generation: n.object.as_ref().map(|o| o.generation),
        conditions: n.conditions(),
    }
}

pub fn to_json(graph: &Graph) -> GraphJson<'_> {
    GraphJson {
        nodes: graph.nodes().into_iter().map(node_json).collect(),
        edges: graph
            .edges()
            .into_iter()
            .map(|(from, kind, to)| EdgeJson { from, to, kind: kind.as_str() })
            .collect(),
    }
}

/// Graphviz DOT: nodes are green when accepted and resolved, red when not, dashed grey for
/// placeholders; edges are labelled with the referencing field.
pub fn to_dot(graph: &Graph) -> String {
    let mut out =
        String::from("digraph aixds {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n");
    for n in graph.nodes() {
        let (style, color) = if n.is_placeholder() {
            ("dashed", "grey")
        } else if n.conditions().iter().all(|c| c.status) {
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
