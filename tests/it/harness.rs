//! Real processes for end-to-end tests: upstream simulators (`e2e/upstream.py`), Envoy from the
//! project's virtualenv, free loopback ports, and a small HTTP/1.1 client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Envoy from `$ENVOY_BIN` or the virtualenv `hack/install.sh` makes.
pub fn envoy_bin() -> PathBuf {
    std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/envoy"))
}

fn python() -> PathBuf {
    repo().join(".venv/bin/python")
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One `e2e/upstream.py` process.
pub struct Upstream {
    pub addr: SocketAddr,
    _child: Child,
}

impl Upstream {
    pub async fn start(id: &str) -> Upstream {
        Self::start_on("127.0.0.1", id).await
    }

    pub async fn start_on(host: &str, id: &str) -> Upstream {
        Self::spawn(host, 0, id, None).await
    }

    /// On `host:port`, as the pods of one InferencePool listen on one target port.
    pub async fn start_at(host: &str, port: u16, id: &str) -> Upstream {
        Self::spawn(host, port, id, None).await
    }

    /// An upstream that appends each request it receives (method, path, headers, JSON body) to
    /// `record` as one JSON line; see [`recorded`].
    pub async fn start_recording(id: &str, record: &Path) -> Upstream {
        Self::spawn("127.0.0.1", 0, id, Some(record)).await
    }

    async fn spawn(host: &str, port: u16, id: &str, record: Option<&Path>) -> Upstream {
        let mut command = Command::new(python());
        command.arg(repo().join("e2e/upstream.py")).args([
            "--host",
            host,
            "--port",
            &port.to_string(),
            "--id",
            id,
        ]);
        if let Some(record) = record {
            command.arg("--record").arg(record);
        }
        let mut child = command
            .stdout(Stdio::piped())
            // One access-log line per request would drown the test output.
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start e2e/upstream.py (run hack/install.sh)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("upstream starts")
            .unwrap()
            .unwrap();
        let addr = line.strip_prefix("listening on ").unwrap().parse().unwrap();
        Upstream { addr, _child: child }
    }
}

/// The requests an upstream started with [`Upstream::start_recording`] has received.
pub fn recorded(record: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// POSTs a small chat completion for `model`, routed by the `x-ai-eg-model` header.
pub async fn chat(port: u16, model: &str) -> std::io::Result<Response> {
    let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    request(port, "POST", "/v1/chat/completions", &[("x-ai-eg-model", model)], &body.to_string())
        .await
}

/// One HTTP/1.1 request on a fresh connection to 127.0.0.1:`port`. The response is read by its
/// framing (content-length or chunked), not to connection close: Envoy answers a direct response
/// before reading the request body, and closing with unread input would reset the connection.
pub async fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Response> {
    request_to(port, "localhost", method, path, headers, body).await
}

/// [`request`] with `host` as the Host header.
pub async fn request_to(
    port: u16,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Response> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(body);
    stream.write_all(head.as_bytes()).await?;
    tokio::time::timeout(Duration::from_secs(20), read_response(&mut stream))
        .await
        .map_err(|_| std::io::Error::other("response timed out"))?
}

async fn read_response(stream: &mut tokio::net::TcpStream) -> std::io::Result<Response> {
    let malformed = || std::io::Error::other("malformed HTTP response");
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(response) = parse_response(&raw) {
            return Ok(response);
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return parse_response(&raw).ok_or_else(malformed);
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

/// The response in `raw`, once all of it has arrived.
fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[split + 4..];
    let body = if headers.get("transfer-encoding").is_some_and(|t| t == "chunked") {
        dechunk(rest)?
    } else {
        let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        rest.get(..len)?.to_vec()
    };
    Some(Response { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).ok()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A port free on every one of `hosts`.
pub fn free_port_on(hosts: &[&str]) -> u16 {
    loop {
        let port = free_port();
        if hosts.iter().all(|h| std::net::TcpListener::bind((*h, port)).is_ok()) {
            return port;
        }
    }
}

/// Which upstream served `model`, or the status when none did.
pub async fn served_by(port: u16, model: &str) -> Result<String, u16> {
    match chat(port, model).await {
        Ok(r) if r.status == 200 => Ok(r.headers.get("x-upstream-id").cloned().unwrap_or_default()),
        Ok(r) => Err(r.status),
        Err(_) => Err(0),
    }
}

/// Envoy's admin `GET path` (e.g. `/stats?filter=update_rejected`). Panics with the reason when
/// the admin interface does not answer 200, so that a check on what it says cannot pass against
/// an Envoy that is not there.
pub async fn admin_get(admin_port: u16, path: &str) -> String {
    try_admin_get(admin_port, path).await.unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`admin_get`], with the failure as an error: for polling an Envoy that is starting.
pub async fn try_admin_get(admin_port: u16, path: &str) -> Result<String, String> {
    let what = format!("Envoy admin GET {path} on port {admin_port}");
    match request(admin_port, "GET", path, &[], "").await {
        Ok(r) if r.status == 200 => Ok(r.body),
        Ok(r) => Err(format!("{what} answered {}: {}", r.status, r.body)),
        Err(e) => Err(format!("{what} failed: {e}")),
    }
}

/// The sum of every `*update_rejected` counter Envoy reports: 0 means no config was NACKed.
/// Panics when Envoy reports no such counter, which happens only when it subscribed to nothing.
pub async fn rejected_updates(admin_port: u16) -> u64 {
    let stats = admin_get(admin_port, "/stats?filter=update_rejected").await;
    let counters: Vec<u64> = stats
        .lines()
        .filter_map(|l| l.rsplit_once(": ").and_then(|(_, v)| v.trim().parse::<u64>().ok()))
        .collect();
    assert!(
        !counters.is_empty(),
        "Envoy on port {admin_port} reports no update_rejected counter:\n{stats}"
    );
    counters.iter().sum()
}

/// Writes a manifest the way a careful editor or `kubectl cp` does: to a hidden temporary file
/// in the same directory, then renamed over `path`, so a watcher never reads half a file.
pub fn write_atomic(path: impl AsRef<Path>, text: impl AsRef<str>) {
    let (path, text) = (path.as_ref(), text.as_ref());
    let dir = path.parent().expect("a manifest path has a directory");
    let mut tmp = tempfile::Builder::new().prefix(".").tempfile_in(dir).unwrap();
    std::io::Write::write_all(&mut tmp, text.as_bytes()).unwrap();
    tmp.persist(path).unwrap_or_else(|e| panic!("renaming onto {}: {e}", path.display()));
}

#[tokio::test]
#[should_panic(expected = "failed")]
async fn admin_get_fails_when_envoy_is_not_there() {
    admin_get(free_port(), "/ready").await;
}

#[tokio::test]
#[should_panic(expected = "update_rejected")]
async fn rejected_updates_fails_when_envoy_is_not_there() {
    rejected_updates(free_port()).await;
}

#[test]
fn write_atomic_replaces_the_file_and_leaves_nothing_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    write_atomic(&path, "a: 1\n");
    write_atomic(&path, "b: 2\n");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "b: 2\n");
    let names: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["gateway.yaml"]);
}

/// xDS and the ext_proc on a free loopback port, to callers without a client certificate (the
/// test calls them directly or starts its own Envoy); see `tls.rs` for mutual TLS.
pub fn insecure_loopback() -> aixds::run::GrpcListen {
    aixds::run::GrpcListen::new("127.0.0.1:0".parse().unwrap(), None, true).unwrap()
}

/// An Envoy of its own (one worker) bootstrapped by `aixds bootstrap` with `opts`, for tests
/// whose aixds runs apart from it; killed when dropped.
pub fn start_envoy(opts: &aixds::bootstrap::BootstrapOptions) -> Child {
    let bootstrap = aixds::bootstrap::bootstrap(opts).expect("a bootstrap");
    Command::new(envoy_bin())
        .args(["--config-yaml", &bootstrap.to_string()])
        .args(["--disable-hot-restart", "--concurrency", "1", "--log-level", "error"])
        .kill_on_drop(true)
        .spawn()
        .expect("start envoy (bash hack/install.sh)")
}

/// One `aixds run --no-envoy` replica serving xDS and the ext_proc on `ip:xds_port` (without
/// client certificates) for an Envoy the test starts itself; `extra` are more flags.
pub fn aixds_replica(dir: &Path, ip: &str, xds_port: u16, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_aixds"))
        .args(["run", "--no-envoy", "--insecure-grpc", "--listener-address", "127.0.0.1"])
        .args(["--admin-address", &format!("{ip}:0"), "--picker-address", &format!("{ip}:0")])
        .args(["--xds-address", &format!("{ip}:{xds_port}")])
        .args(extra)
        .arg(dir)
        .env("AIXDS_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("start aixds run")
}
