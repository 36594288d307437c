//! Sources of objects. Each source turns what it reads into [`Change`]s: only the objects that
//! were added, changed or removed since its last batch. [`Feed`] is what the run loop reads:
//! manifest files watched on disk, or Kubernetes watches ([`crate::kube`]), behind one interface
//! (the initial objects, a wake-up per burst of events, the changes since the last batch).

mod manifest;
mod watch;

pub use manifest::{FileError, Location, ManifestSet, Merged, Skipped};
pub use watch::{Changed, Event, SETTLED_QUIET, Watching, debounce, watch};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

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
        watching: Watching,
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
                let watching =
                    watch(paths, quiet, max_delay).context("watching the manifest paths")?;
                Ok(Feed::Files { source, initial: Some(initial), watching })
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
            Feed::Files { watching, .. } => watching.wakeups.recv().await,
            Feed::Kubernetes(source) => source.next_wake().await,
        }
    }

    /// The changes since the last call. An error means the source cannot be read now: keep the
    /// last good config.
    pub fn changes(&mut self) -> Result<Vec<Change>, String> {
        match self {
            Feed::Files { source, watching, .. } => {
                let mut changed = watching.changed.lock().unwrap_or_else(|e| e.into_inner());
                let changed = std::mem::take(&mut *changed);
                let changes = source.reload_changed(changed).map_err(|e| e.to_string())?;
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
    /// The last read failed part way: the next reads everything.
    reread_all: bool,
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
            reread_all: true,
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
            .filter(|p| files.binary_search_by(|f| f.as_path().cmp(p)).is_err())
            .map(Path::to_path_buf)
            .collect();
        for path in gone {
            self.set.remove(&path);
        }
        for path in &files {
            self.read(path);
        }
        self.reread_all = false;
        Ok(self.diff())
    }

    /// Re-reads what the watcher saw change (see [`Changed`]) and returns the changes since the
    /// last call. Gives the same changes as [`ManifestSource::reload`] would for that edit, at
    /// the cost of the changed files only: a path under no root is not read (the source never
    /// reads it), a removed file or directory forgets the files it held, a file is read again.
    /// Whatever it cannot tell apart cheaply (a directory that appeared, an event without paths,
    /// a path that cannot be examined, the call after an error) reads everything again.
    pub fn reload_changed(&mut self, changed: Changed) -> Result<Vec<Change>, RootError> {
        if changed.everything || self.reread_all {
            return self.reload();
        }
        // A root that is gone is an error, as for a full read; the next call reads everything.
        for root in &self.roots {
            if let Err(source) = std::fs::metadata(root) {
                self.reread_all = true;
                return Err(RootError { path: root.clone(), source });
            }
        }
        for path in &changed.paths {
            let Some(path) = self.source_path(path) else { continue };
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => return self.reload(),
                Ok(_) if is_manifest_name(&path) || self.roots.contains(&path) => {
                    self.read(&path);
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.set.remove_under(&path),
                Err(_) => return self.reload(),
            }
        }
        Ok(self.diff())
    }

    /// `path` (as the watcher names it) as the source names it when it reads its roots, if the
    /// source would read it: a file root itself, or a path under a directory root with no
    /// hidden part (the walk skips those).
    fn source_path(&self, path: &Path) -> Option<PathBuf> {
        let path = std::path::absolute(path).ok()?;
        self.roots.iter().find_map(|root| {
            let rel = path.strip_prefix(std::path::absolute(root).ok()?).ok()?;
            let hidden = rel
                .components()
                .any(|c| c.as_os_str().to_str().is_some_and(|c| c.starts_with('.')));
            (!hidden)
                .then(|| if rel.as_os_str().is_empty() { root.clone() } else { root.join(rel) })
        })
    }

    fn read(&mut self, path: &Path) {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                self.set.update(path, &text);
            }
            Err(e) => self.set.unreadable(path, format!("cannot read: {e}")),
        }
    }

    /// The changes for the objects the reads since the last call touched.
    fn diff(&mut self) -> Vec<Change> {
        let mut touched: Vec<ObjectKey> = self.set.take_touched().into_iter().collect();
        touched.sort();
        let (mut deletes, mut applies) = (Vec::new(), Vec::new());
        for key in touched {
            match self.set.merged(&key) {
                None => {
                    self.locations.remove(&key);
                    if self.applied.remove(&key).is_some() {
                        deletes.push(Change::Delete(key));
                    }
                }
                Some(m) => {
                    let state = (m.object.content_hash, m.conflict.clone());
                    if self.applied.get(&key) != Some(&state) {
                        let object = Box::new(m.object.clone());
                        applies.push(Change::Apply { object, conflict: m.conflict });
                        self.applied.insert(key.clone(), state);
                    }
                    self.locations.insert(key, m.locations);
                }
            }
        }
        deletes.extend(applies);
        deletes
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
        } else if is_manifest_name(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Whether a file found in a directory root is read: `.yaml`, `.yml` or `.json`.
fn is_manifest_name(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
}
