//! Sources of objects. Each source turns what it reads into [`Change`]s: only the objects that
//! were added, changed or removed since its last batch. [`Feed`] is what the run loop reads:
//! manifest files watched on disk, or Kubernetes watches ([`crate::kube`]), behind one interface
//! (the initial objects, a wake-up per burst of events, the changes since the last batch).

mod manifest;
mod watch;

pub use manifest::{FileError, Location, ManifestSet, Merged, Skipped};
pub use watch::{Event, SETTLED_QUIET, debounce, watch};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::admin::RunMetrics;
use crate::kube::{KubeOptions, KubeSource};

use crate::api::{Kind, Object, ObjectKey};
use crate::graph::{Affected, Graph};

/// One difference to apply to the graph.
#[derive(Debug, Clone)]
pub enum Change {
    Apply {
        object: Box<Object>,
        conflict: Option<String>,
    },
    Delete(ObjectKey),
    /// The source cannot have objects of `kind` (its CRD is not installed: `message` says so),
    /// or can again (`None`).
    KindMissing {
        kind: Kind,
        message: Option<String>,
    },
}

impl Change {
    /// Applies the change and returns what it affects.
    pub fn apply_to(self, graph: &mut Graph) -> Affected {
        match self {
            Change::Apply { object, conflict } => graph.apply_with_conflict(*object, conflict),
            Change::Delete(key) => graph.delete(&key),
            Change::KindMissing { kind, message } => graph.set_kind_missing(kind, message),
        }
    }
}

/// Where the run loop's objects come from.
#[derive(Debug, Clone)]
pub enum SourceOptions {
    /// Manifest files and directories, watched for edits.
    Files(Vec<PathBuf>),
    /// The Kubernetes API server.
    Kubernetes(Box<KubeOptions>),
}

/// A started source.
pub enum Feed {
    Files {
        source: ManifestSource,
        /// The first read, until [`Feed::initial`] takes it.
        initial: Option<Vec<Change>>,
        /// Lives as long as the feed.
        _watcher: notify::RecommendedWatcher,
        wakeups: mpsc::Receiver<()>,
    },
    Kubernetes(KubeSource),
}

impl Feed {
    /// Reads the files (a missing root is an error) and starts watching them, or starts the
    /// Kubernetes watches. Bursts of events wake [`Feed::next_wake`] once (see [`debounce`]):
    /// at once for a change complete as seen, after `quiet` without events for a file still
    /// being written, `max_delay` after the first at the latest.
    pub async fn start(
        opts: &SourceOptions,
        metrics: Arc<RunMetrics>,
        quiet: Duration,
        max_delay: Duration,
    ) -> anyhow::Result<Feed> {
        match opts {
            SourceOptions::Files(paths) => {
                let mut source = ManifestSource::new(paths.clone());
                let initial = source.reload()?;
                report_files(&source);
                let (watcher, wakeups) =
                    watch(paths, quiet, max_delay).context("watching the manifest paths")?;
                Ok(Feed::Files { source, initial: Some(initial), _watcher: watcher, wakeups })
            }
            SourceOptions::Kubernetes(kube) => {
                let source = KubeSource::start(kube, metrics, quiet, max_delay)
                    .await
                    .context("connecting to the Kubernetes API server")?;
                Ok(Feed::Kubernetes(source))
            }
        }
    }

    /// Every object the source holds now. For Kubernetes, waits until every kind is listed.
    pub async fn initial(&mut self) -> Vec<Change> {
        match self {
            Feed::Files { initial, .. } => initial.take().unwrap_or_default(),
            Feed::Kubernetes(source) => {
                source.synced().await;
                source.changes()
            }
        }
    }

    /// Waits for the next burst of events; `None` when the source is gone.
    pub async fn next_wake(&mut self) -> Option<()> {
        match self {
            Feed::Files { wakeups, .. } => wakeups.recv().await,
            Feed::Kubernetes(source) => source.next_wake().await,
        }
    }

    /// The changes since the last call. An error means the source cannot be read now: keep the
    /// last good config.
    pub fn changes(&mut self) -> Result<Vec<Change>, String> {
        match self {
            Feed::Files { source, .. } => {
                let changes = source.reload().map_err(|e| e.to_string())?;
                report_files(source);
                Ok(changes)
            }
            Feed::Kubernetes(source) => Ok(source.changes()),
        }
    }

    pub fn kube(&self) -> Option<&KubeSource> {
        match self {
            Feed::Files { .. } => None,
            Feed::Kubernetes(source) => Some(source),
        }
    }
}

fn report_files(source: &ManifestSource) {
    for skipped in source.set().skipped() {
        tracing::warn!("{skipped}");
    }
    for error in source.set().errors() {
        tracing::error!("{error}");
    }
}

/// Manifest files and directories given on the command line, read into a [`ManifestSet`].
#[derive(Debug)]
pub struct ManifestSource {
    roots: Vec<PathBuf>,
    set: ManifestSet,
    /// What the last batch handed out: key → (content hash, conflict).
    applied: BTreeMap<ObjectKey, (u64, Option<String>)>,
    locations: BTreeMap<ObjectKey, Vec<Location>>,
}

/// Why a root path could not be read at all.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct RootError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl ManifestSource {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        ManifestSource {
            roots,
            set: ManifestSet::new(),
            applied: BTreeMap::new(),
            locations: BTreeMap::new(),
        }
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    pub fn set(&self) -> &ManifestSet {
        &self.set
    }

    /// Where each object is defined.
    pub fn locations(&self, key: &ObjectKey) -> &[Location] {
        self.locations.get(key).map(Vec::as_slice).unwrap_or_default()
    }

    /// Re-reads every file under the roots and returns the changes since the last call.
    /// A root that does not exist is an error; a file that cannot be read is reported as a
    /// file error and keeps its last objects.
    pub fn reload(&mut self) -> Result<Vec<Change>, RootError> {
        let files = manifest_files(&self.roots)?;
        let gone: Vec<PathBuf> = self
            .set
            .paths()
            .filter(|p| !files.contains(&p.to_path_buf()))
            .map(Path::to_path_buf)
            .collect();
        for path in gone {
            self.set.remove(&path);
        }
        for path in &files {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    self.set.update(path, &text);
                }
                Err(e) => self.set.unreadable(path, format!("cannot read: {e}")),
            }
        }
        Ok(self.diff())
    }

    fn diff(&mut self) -> Vec<Change> {
        let merged = self.set.merged();
        let mut changes = Vec::new();
        for key in self.applied.keys() {
            if !merged.contains_key(key) {
                changes.push(Change::Delete(key.clone()));
            }
        }
        let mut applied = BTreeMap::new();
        self.locations.clear();
        for (key, m) in merged {
            let state = (m.object.content_hash, m.conflict.clone());
            if self.applied.get(&key) != Some(&state) {
                changes.push(Change::Apply { object: Box::new(m.object), conflict: m.conflict });
            }
            self.locations.insert(key.clone(), m.locations);
            applied.insert(key, state);
        }
        self.applied = applied;
        changes
    }
}

/// The manifest files under `roots`: files as given, and `.yaml`/`.yml`/`.json` files found
/// recursively in directories, in path order.
pub fn manifest_files(roots: &[PathBuf]) -> Result<Vec<PathBuf>, RootError> {
    let mut out = Vec::new();
    for root in roots {
        let meta =
            std::fs::metadata(root).map_err(|source| RootError { path: root.clone(), source })?;
        if meta.is_dir() {
            walk(root, &mut out).map_err(|source| RootError { path: root.clone(), source })?;
        } else {
            out.push(root.clone());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
        {
            out.push(path);
        }
    }
    Ok(())
}
