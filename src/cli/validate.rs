//! `aixds validate`: load manifests into a graph, report every object's conditions, and give a
//! [`Verdict`] whose exit code CI can act on.

use std::fmt::Write;
use std::path::PathBuf;

use serde::Serialize;

use crate::graph::listeners::listeners;
use crate::graph::{Condition, Graph, export};
use crate::source::{Location, ManifestSource, RootError};

/// Manifests read from disk and the graph built from them.
pub struct Loaded {
    pub source: ManifestSource,
    pub graph: Graph,
}

/// Reads every manifest under `paths` into a new graph.
pub fn load(paths: Vec<PathBuf>) -> Result<Loaded, RootError> {
    let mut source = ManifestSource::new(paths);
    let mut graph = Graph::new();
    for change in source.reload()? {
        change.apply_to(&mut graph);
    }
    Ok(Loaded { source, graph })
}

/// Warnings for skipped documents and errors for files that did not parse, one line each.
pub fn file_messages(source: &ManifestSource) -> Vec<String> {
    let set = source.set();
    set.skipped()
        .map(|s| format!("warning: {s}"))
        .chain(set.errors().map(|e| format!("error: {e}")))
        .collect()
}

/// What `aixds validate` concludes, and the exit code that says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every file was read and parsed; every object is accepted, defined once and resolves
    /// every reference. Exit 0.
    Ok,
    /// A document that does not parse (YAML syntax, fields of the wrong type, no kind), an
    /// object left out for an invalid name, or an object not accepted, defined differently in
    /// two files, or with a reference that does not resolve (`ResolvedRefs=False`: a missing
    /// object, a Secret without its key, ...). Exit 1.
    Problems,
    /// A file under the given paths could not be read at all (permissions, not UTF-8 text):
    /// what it defines was never looked at. Exit 2, as for a path that does not exist.
    Unreadable,
}

impl Verdict {
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Ok => 0,
            Verdict::Problems => 1,
            Verdict::Unreadable => 2,
        }
    }
}

/// `Type=Status`, then `Reason: message` when there is a message.
pub fn condition_line(c: &Condition) -> String {
    let status = if c.status { "True" } else { "False" };
    if c.message.is_empty() {
        format!("{:?}={status}", c.type_)
    } else {
        format!("{:?}={status} {:?}: {}", c.type_, c.reason, c.message)
    }
}

pub struct Report<'a> {
    loaded: &'a Loaded,
}

#[derive(Serialize)]
struct ObjectJson<'a> {
    #[serde(flatten)]
    node: export::NodeJson<'a>,
    locations: Vec<String>,
}

impl<'a> Report<'a> {
    pub fn new(loaded: &'a Loaded) -> Self {
        Report { loaded }
    }

    /// Unreadable files first: a report that could not look at everything is not a verdict on
    /// the manifests. A Gateway listener that cannot be served is a problem too. A reference to an object that is in none of the files is a problem even
    /// where it may come from the cluster: validate the files that will be applied together.
    pub fn verdict(&self) -> Verdict {
        let l = self.loaded;
        if l.source.set().errors().any(|e| e.unreadable) {
            return Verdict::Unreadable;
        }
        // A Gateway listener left out serves nothing of what its routes expect.
        let clean = l.source.set().errors().next().is_none()
            && l.graph.objects().all(|o| {
                l.graph
                    .node(&o.key)
                    .is_some_and(|n| n.accepted() && n.resolved() && n.conflict().is_none())
                    && listeners(&l.graph, &o.key).iter().all(|l| l.usable())
            });
        if clean { Verdict::Ok } else { Verdict::Problems }
    }

    pub fn text(&self) -> String {
        let (source, graph) = (&self.loaded.source, &self.loaded.graph);
        let mut out = String::new();
        let (mut total, mut rejected, mut unresolved) = (0, 0, 0);
        for node in graph.nodes().into_iter().filter(|n| !n.is_placeholder()) {
            total += 1;
            rejected += usize::from(!node.accepted());
            unresolved += usize::from(!node.resolved());
            let places: Vec<String> =
                source.locations(&node.key).iter().map(Location::to_string).collect();
            let _ = writeln!(out, "{} ({})", node.key, places.join(", "));
            for c in node.conditions() {
                let _ = writeln!(out, "  {}", condition_line(c));
            }
            for l in listeners(graph, &node.key) {
                let _ = writeln!(out, "  listener {:?}:", l.spec.name);
                for c in &l.conditions {
                    let _ = writeln!(out, "    {}", condition_line(c));
                }
            }
        }
        for line in file_messages(source) {
            let _ = writeln!(out, "{line}");
        }
        let skipped = source.set().skipped().count();
        let errors = source.set().errors().count();
        let _ = writeln!(
            out,
            "{total} objects: {rejected} not accepted, {unresolved} with unresolved references; \
             {skipped} documents skipped; {errors} file errors"
        );
        out
    }

    pub fn json(&self) -> serde_json::Value {
        let (source, graph) = (&self.loaded.source, &self.loaded.graph);
        let objects: Vec<ObjectJson> = graph
            .nodes()
            .into_iter()
            .filter(|n| !n.is_placeholder())
            .map(|n| ObjectJson {
                node: export::node_json(graph, n),
                locations: source.locations(&n.key).iter().map(Location::to_string).collect(),
            })
            .collect();
        serde_json::json!({
            "ok": self.verdict() == Verdict::Ok,
            "objects": objects,
            "skipped": source.set().skipped().map(|s| s.to_string()).collect::<Vec<_>>(),
            "errors": source.set().errors().map(|e| e.to_string()).collect::<Vec<_>>(),
        })
    }
}
