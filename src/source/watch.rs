//! Filesystem watching for the manifest source, and the debounce every source uses: one
//! wake-up per burst of events.
//!
//! A change that is complete as seen ([`Event::Settled`]: a file closed after writing, renamed
//! into place or removed; an object from the API server) wakes the reader at once, after only
//! [`SETTLED_QUIET`] to take the rest of the same write with it: waiting longer would only
//! delay it. A change that may be half done ([`Event::Unsettled`]: data written to a file still
//! open, which a reader would see truncated) waits for `quiet` without events, as every change
//! did before, unless the file's close comes first.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long a settled change waits for more events of the same write (a rename's pair, a
/// close after the last write) before the reader is woken.
pub const SETTLED_QUIET: Duration = Duration::from_millis(2);

/// What a source event says about the state it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Complete as seen: worth applying at once.
    Settled,
    /// Perhaps half done: wait for the writer to finish.
    Unsettled,
}

impl Event {
    /// What a filesystem event says, or `None` for one that changes nothing (a read).
    fn of(kind: &EventKind) -> Option<Event> {
        match kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Remove(_) => Some(Event::Settled),
            EventKind::Access(_) => None,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Any | EventKind::Other => {
                Some(Event::Unsettled)
            }
        }
    }
}

/// The symlink Kubernetes swaps (by renaming a new one over it) to update every file of a
/// mounted ConfigMap or Secret at once; the visible files are links through it. Hidden, but an
/// event on it changes what every file of the mount reads.
const CONFIGMAP_SWAP: &str = "..data";

/// Whether an event on `paths` may change what the source reads: one on a file given as a root
/// (by name: its directory is watched), or on a mounted ConfigMap's swapped symlink (see
/// [`CONFIGMAP_SWAP`]), or on a path under a directory root that is neither
/// hidden nor a file of another extension than the manifests' (`.yaml`, `.yml`, `.json`), as
/// [`super::manifest_files`] skips those. Only what the source surely skips is left out
/// (editors' swap files, temp files renamed into place): an event without paths counts.
fn concerns_manifests(file_roots: &[OsString], paths: &[PathBuf]) -> bool {
    paths.is_empty()
        || paths.iter().any(|path| {
            let Some(name) = path.file_name() else { return true };
            if file_roots.iter().any(|root| root == name) || name == CONFIGMAP_SWAP {
                return true;
            }
            let hidden = name.to_str().is_some_and(|n| n.starts_with('.'));
            let other = path
                .extension()
                .is_some_and(|e| !matches!(e.to_str(), Some("yaml" | "yml" | "json")));
            !hidden && !other
        })
}

/// What the watcher saw change: the paths its events named, or everything (an event without
/// paths, or the kernel's queue overflowed and events were lost).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changed {
    pub paths: BTreeSet<PathBuf>,
    pub everything: bool,
}

/// A started [`watch`].
pub struct Watching {
    pub watcher: notify::RecommendedWatcher,
    pub wakeups: mpsc::Receiver<()>,
    pub changed: Arc<Mutex<Changed>>,
}

/// Watches `roots` (directories recursively; for a file, its directory, so that editors that
/// replace the file by renaming are seen). The returned receiver yields once per burst of
/// events that concern the manifests (see [`debounce`]); the paths they named gather in the
/// returned [`Changed`] until the reader takes them, recorded before the event that wakes the
/// reader is sent, so that a reader never wakes without them. Keep the watcher alive as long
/// as the receiver is used.
pub fn watch(roots: &[PathBuf], quiet: Duration, max_delay: Duration) -> notify::Result<Watching> {
    let (raw_tx, raw_rx) = mpsc::unbounded_channel::<Event>();
    let file_roots: Vec<OsString> = roots
        .iter()
        .filter(|r| !r.is_dir())
        .filter_map(|r| r.file_name().map(OsString::from))
        .collect();
    let changed = Arc::new(Mutex::new(Changed::default()));
    let seen = changed.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let event = match event {
            Ok(event) => event,
            // The watcher lost track (its queue overflowed, a watch failed): read everything.
            Err(_) => notify::Event::new(EventKind::Other),
        };
        if !concerns_manifests(&file_roots, &event.paths) {
            return;
        }
        let Some(kind) = Event::of(&event.kind) else { return };
        {
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            let swapped =
                event.paths.iter().any(|p| p.file_name() == Some(CONFIGMAP_SWAP.as_ref()));
            if event.paths.is_empty() || event.need_rescan() || swapped {
                seen.everything = true;
            }
            seen.paths.extend(event.paths);
        }
        let _ = raw_tx.send(kind);
    })?;
    for root in roots {
        if root.is_dir() {
            watcher.watch(root, RecursiveMode::Recursive)?;
        } else {
            let dir = root.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(".".as_ref());
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
    }
    Ok(Watching { watcher, wakeups: debounce(raw_rx, quiet, max_delay), changed })
}

/// Turns a stream of raw events into one wake-up per burst: once the last event has been
/// followed by no other for its quiet time ([`SETTLED_QUIET`] after a settled one, `quiet`
/// after an unsettled one), or `max_delay` after the first, whichever comes first. A settled
/// change within `quiet` of the last wake-up waits `quiet` too: a writer that never stops
/// (a tool rewriting a file in a loop) gets a batch per `max_delay`, as before, not one every
/// few milliseconds for Envoy to rebuild. The returned receiver holds at most one wake-up: the
/// reader takes everything that is pending when it wakes, so what arrives while a batch is
/// applied makes the next batch.
pub fn debounce(
    mut raw_rx: mpsc::UnboundedReceiver<Event>,
    quiet: Duration,
    max_delay: Duration,
) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut last_wake: Option<tokio::time::Instant> = None;
        while let Some(first) = raw_rx.recv().await {
            let churning = last_wake.is_some_and(|w| w.elapsed() < quiet);
            let quiet_after = |event: Event| match event {
                Event::Settled if !churning => SETTLED_QUIET.min(quiet),
                Event::Settled | Event::Unsettled => quiet,
            };
            let deadline = tokio::time::Instant::now() + max_delay;
            let mut wait_for = quiet_after(first);
            loop {
                let wait =
                    tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + wait_for));
                tokio::select! {
                    more = raw_rx.recv() => match more {
                        Some(event) => wait_for = quiet_after(event),
                        None => break,
                    },
                    _ = wait => break,
                }
            }
            last_wake = Some(tokio::time::Instant::now());
            // A full channel already holds a wake-up; the reader takes everything anyway.
            if tx.try_send(()).is_err() && tx.is_closed() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use tokio::time::{Instant, sleep};

    use super::*;

    const QUIET: Duration = Duration::from_millis(20);
    const MAX_DELAY: Duration = Duration::from_millis(200);

    #[test]
    fn only_what_the_source_surely_skips_is_left_out() {
        let roots = [OsString::from("gateway.conf")];
        let concerns = |paths: &[&str]| {
            concerns_manifests(&roots, &paths.iter().map(PathBuf::from).collect::<Vec<_>>())
        };
        for relevant in [
            &["/m/a.yaml"][..],
            &["/m/sub/b.yml"],
            &["/m/c.json"],
            &["/m/sub"],
            &["/etc/gateway.conf"],
            &["/m/a.yaml", "/m/a.yaml.bak"],
            &[],
        ] {
            assert!(concerns(relevant), "{relevant:?}");
        }
        for skipped in [&["/m/.units-00001.tmp"][..], &["/m/.a.yaml.swp"], &["/m/a.yaml~"]] {
            assert!(!concerns(skipped), "{skipped:?}");
        }
    }

    /// In paused time, so that what is measured is the debounce's own waiting, exactly.
    #[tokio::test(start_paused = true)]
    async fn settled_changes_wake_at_once_and_unsettled_ones_after_quiet() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut woken = debounce(rx, QUIET, MAX_DELAY);
        let woken_after = |events: Vec<(Duration, Event)>| {
            let tx = tx.clone();
            async move {
                let start = Instant::now();
                for (after, event) in events {
                    sleep(after).await;
                    tx.send(event).unwrap();
                }
                start
            }
        };

        // A file renamed into place, or an object from the API server.
        let start = woken_after(vec![(Duration::ZERO, Event::Settled)]).await;
        woken.recv().await.unwrap();
        assert_eq!(start.elapsed(), SETTLED_QUIET);

        // Data written to a file still open: the quiet time.
        let start = woken_after(vec![(Duration::ZERO, Event::Unsettled)]).await;
        woken.recv().await.unwrap();
        assert_eq!(start.elapsed(), QUIET);

        // Written, then closed 5 ms later: woken just after the close (once `QUIET` has passed
        // since the last wake-up, as below).
        sleep(QUIET).await;
        let five = Duration::from_millis(5);
        let start =
            woken_after(vec![(Duration::ZERO, Event::Unsettled), (five, Event::Settled)]).await;
        woken.recv().await.unwrap();
        assert_eq!(start.elapsed(), five + SETTLED_QUIET);

        // Settled changes that keep coming a little apart: a wake-up per `MAX_DELAY` after the
        // first, not one per change.
        sleep(QUIET).await;
        let wakes = tokio::spawn(async move {
            let mut n = 0;
            while tokio::time::timeout(MAX_DELAY * 2, woken.recv()).await.is_ok() {
                n += 1;
            }
            (n, woken)
        });
        let spaced = Duration::from_millis(3);
        woken_after(vec![(spaced, Event::Settled); 300]).await;
        let (n, mut woken) = wakes.await.unwrap();
        assert!((4..=6).contains(&n), "{n} wake-ups for 900 ms of changes 3 ms apart");

        // Events that keep coming: one wake-up, `MAX_DELAY` after the first.
        sleep(QUIET).await;
        let start = Instant::now();
        let feeder =
            tokio::spawn(woken_after(vec![(Duration::from_millis(1), Event::Settled); 400]));
        woken.recv().await.unwrap();
        assert_eq!(start.elapsed(), MAX_DELAY + Duration::from_millis(1));
        feeder.await.unwrap();
    }
}
