//! Envoy as a child process: found, started with a bootstrap that points at this aixds, its
//! logs forwarded to ours, stopped with us.
//!
//! Envoy must not outlive aixds, even when aixds is killed with SIGKILL: an orphaned Envoy
//! would keep its ports and answer every request with an error. It is started through
//! util-linux's `setpriv --pdeathsig KILL`, so the kernel kills it when the aixds thread that
//! started it goes away (a tokio worker, which lives as long as the runtime). The bootstrap is
//! passed on the command line (it names files and a socket, no secret), so no temporary file
//! is left behind either.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::bootstrap::{BootstrapOptions, bootstrap};

#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    pub binary: PathBuf,
    /// `xds_address` is replaced by aixds's private socket.
    pub bootstrap: BootstrapOptions,
    pub log_level: String,
    /// Worker threads (`--concurrency`); `None` lets Envoy use one per core.
    pub concurrency: Option<u32>,
}

/// The Envoy binary: `explicit` (`--envoy`), else `$ENVOY_BIN`, else `.venv/bin/envoy` (what
/// `hack/install.sh` installs), else `envoy` on PATH.
pub fn find_envoy(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit.or_else(|| std::env::var_os("ENVOY_BIN").map(PathBuf::from)) {
        return Ok(path);
    }
    let venv = Path::new(".venv/bin/envoy");
    if venv.exists() {
        return Ok(venv.to_path_buf());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("envoy"))
        .find(|p| p.is_file())
        .context(
            "no envoy binary: pass --envoy, set ENVOY_BIN, run `bash hack/install.sh` \
             (installs .venv/bin/envoy), or use --no-envoy",
        )
}

pub(super) struct EnvoyProcess {
    child: Child,
    pub admin: SocketAddr,
}

/// Where util-linux's `setpriv` is looked for.
const SETPRIV: &[&str] = &["/usr/bin/setpriv", "/bin/setpriv"];

impl EnvoyProcess {
    /// Starts Envoy with a bootstrap that reaches aixds at `xds_address` (e.g. the private
    /// socket, `unix:@name`).
    pub async fn start(opts: &EnvoyOptions, xds_address: &str) -> anyhow::Result<Self> {
        let mut b = opts.bootstrap.clone();
        b.xds_address = xds_address.to_string();
        let config = serde_json::to_string(&bootstrap(&b)?)?;
        let mut cmd = match SETPRIV.iter().map(Path::new).find(|p| p.is_file()) {
            Some(setpriv) => {
                let mut cmd = Command::new(setpriv);
                cmd.args(["--pdeathsig", "KILL", "--"]).arg(&opts.binary);
                cmd
            }
            None => {
                tracing::warn!(
                    "setpriv (util-linux) not found: Envoy will outlive aixds if aixds is killed"
                );
                Command::new(&opts.binary)
            }
        };
        cmd.arg("--config-yaml")
            .arg(config)
            .args(["--log-level", &opts.log_level])
            // Several Envoys may run on one machine (tests, side by side setups).
            .arg("--disable-hot-restart")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(n) = opts.concurrency {
            cmd.args(["--concurrency", &n.to_string()]);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting envoy from {}", opts.binary.display()))?;
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward(out));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward(err));
        }
        let admin: SocketAddr = format!("{}:{}", b.admin_address, b.admin_port)
            .parse()
            .context("Envoy admin address")?;
        tracing::info!(pid = child.id(), %admin, "started envoy");
        Ok(EnvoyProcess { child, admin })
    }

    pub async fn wait(&mut self) -> String {
        match self.child.wait().await {
            Ok(status) => status.to_string(),
            Err(e) => e.to_string(),
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Envoy's log lines become ours, under the `envoy` target.
async fn forward<R: tokio::io::AsyncRead + Unpin>(reader: R) {
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(target: "envoy", "{line}");
    }
}
