//! `/debug/graph?format=html`: one self-contained page (no network, no vendored library) that
//! draws the graph as inline SVG, colours each node by its conditions, finds an object by name,
//! and on a click shows its conditions, its references both ways, and the Envoy resources
//! compiled from it with each Envoy's ACK state.
//!
//! The data is embedded in the page as JSON, so a saved copy still works. The layout is one
//! column per kind in the order references flow (Gateway ← route → backend → pool → pods), which
//! reads well for these graphs without a general layout engine. The URL fragment
//! `#search=TEXT` and `#select=Kind/ns/name` drive the same handlers as typing and clicking, so
//! a link can point at an object (and a headless browser test needs no input events).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::api::ObjectKey;
use crate::graph::Graph;
use crate::graph::export::{self, GraphJson, View};
use crate::status::Produced;

const TEMPLATE: &str = include_str!("graph.html");
const DATA_MARK: &str = "\"__AIXDS_DATA__\"";

#[derive(Serialize)]
struct Data<'a> {
    graph: GraphJson<'a>,
    produced: BTreeMap<&'a ObjectKey, &'a Vec<Produced>>,
}

pub fn page(graph: &Graph, view: &View, produced: &BTreeMap<ObjectKey, Vec<Produced>>) -> String {
    let data = Data {
        graph: export::to_json_view(graph, view),
        produced: produced.iter().filter(|(k, _)| view.includes(k)).collect(),
    };
    // `<` only occurs inside JSON strings, where `\u003c` means the same and cannot end the
    // script element.
    let json = serde_json::to_string(&data)
        .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
        .replace('<', "\\u003c");
    TEMPLATE.replacen(DATA_MARK, &json, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_cannot_close_the_script_element() {
        let page = page(&Graph::new(), &View::default(), &BTreeMap::new());
        assert!(!page.contains(DATA_MARK));
        assert_eq!(page.matches("</script>").count(), TEMPLATE.matches("</script>").count());
    }
}
