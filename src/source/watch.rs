//! Filesystem watching for the manifest source, and the debounce every source uses: one
//! wake-up per burst of events.

use std::path::PathBuf;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Watches `roots` (directories recursively; for a file, its directory, so that editors that
/// replace the file by renaming are seen). The returned receiver yields once per burst of
/// events: after `quiet` without events, or `max_delay` after the first, whichever comes first.
/// Keep the watcher alive as long as the receiver is used.
pub fn watch(
    roots: &[PathBuf],
    quiet: Duration,
    max_delay: Duration,
) -> notify::Result<(notify::RecommendedWatcher, mpsc::Receiver<()>)> {
    let (raw_tx, raw_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = raw_tx.send(());
        }
    })?;
    for root in roots {
        if root.is_dir() {
            watcher.watch(root, RecursiveMode::Recursive)?;
        } else {
            let dir = root.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(".".as_ref());
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
    }
    Ok((watcher, debounce(raw_rx, quiet, max_delay)))
}

/// Turns a stream of raw events into one wake-up per burst: after `quiet` without events, or
/// `max_delay` after the first, whichever comes first. The returned receiver holds at most one
/// wake-up: the reader takes everything that is pending when it wakes.
pub fn debounce(
    mut raw_rx: mpsc::UnboundedReceiver<()>,
    quiet: Duration,
    max_delay: Duration,
) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            let deadline = tokio::time::Instant::now() + max_delay;
            loop {
                let wait =
                    tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + quiet));
                tokio::select! {
                    more = raw_rx.recv() => if more.is_none() { break },
                    _ = wait => break,
                }
            }
            // A full channel already holds a wake-up; the reader takes everything anyway.
            if tx.try_send(()).is_err() && tx.is_closed() {
                return;
            }
        }
    });
    rx
}
