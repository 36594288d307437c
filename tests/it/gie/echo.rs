//! An in-process stand-in for the Gateway API Inference Extension's `echo-basic` model-server
//! pods: every request, whatever its method and path, is answered 200 with a JSON description
//! of itself and of the "pod" that served it.
//!
//! Header names in the description's `headers` are canonicalised the way Go's `net/http` does
//! (`test-epp-endpoint-selection` becomes `Test-Epp-Endpoint-Selection`), so the JSON looks
//! like the real server's; the upstream tests compare header names case-insensitively anyway.
//! As in Go, `Host` is reported in `host` only, not among the headers.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::ServerTask;

/// The request header whose `name:value` pairs the echo server sets on its response.
const SET_HEADER: &str = "x-echo-set-header";
/// What every HTTP/2 connection starts with (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How many of the last request targets an [`Echo`] remembers.
const PATHS_KEPT: usize = 256;

/// The protocol an [`Echo`] speaks, as `echo-basic`'s HTTP and h2c ports do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain HTTP/1.1.
    Http1,
    /// HTTP/2 over cleartext with prior knowledge only; anything else gets a 400.
    H2c,
}

/// A running stand-in for one `echo-basic` pod; stopped when dropped.
pub struct Echo {
    addr: SocketAddr,
    pod: Arc<Pod>,
    task: ServerTask,
}

/// Who the server claims to be, and what it has served.
struct Pod {
    pod: String,
    namespace: String,
    port: String,
    requests: AtomicUsize,
    paths: Mutex<VecDeque<String>>,
}

impl Echo {
    /// Serves on `addr` (a loopback address; port 0 picks a free port, see [`Echo::addr`]),
    /// answering as pod `pod` of `namespace`. Panics when `addr` cannot be bound.
    pub async fn start(addr: SocketAddr, pod: &str, namespace: &str, mode: Mode) -> Echo {
        let listener =
            TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("echo server on {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let pod = Arc::new(Pod {
            pod: pod.to_string(),
            namespace: namespace.to_string(),
            port: addr.port().to_string(),
            requests: AtomicUsize::new(0),
            paths: Mutex::new(VecDeque::new()),
        });
        let serving = pod.clone();
        let task =
            ServerTask::spawn(listener, move |stream| connection(stream, mode, serving.clone()));
        Echo { addr, pod, task }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests it has received (counted on arrival, before any `delay`).
    pub fn requests(&self) -> usize {
        self.pod.requests.load(Ordering::SeqCst)
    }

    /// The request targets (path and query) of the last requests received, oldest first.
    pub fn paths(&self) -> Vec<String> {
        self.pod.paths.lock().unwrap().iter().cloned().collect()
    }

    /// Stops serving: the port closes and open connections are dropped (at the runtime's next
    /// turn; [`Echo::stop_and_wait`] waits for it).
    pub fn stop(&mut self) {
        self.task.stop();
    }

    /// Stops serving and waits until the port is closed and every connection dropped.
    pub async fn stop_and_wait(&mut self) {
        self.task.stop_and_wait().await;
    }
}

async fn connection(stream: TcpStream, mode: Mode, pod: Arc<Pod>) {
    let service = service_fn(move |request| respond(request, pod.clone()));
    match mode {
        Mode::Http1 => {
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        }
        Mode::H2c => {
            let mut stream = stream;
            match read_preface(&mut stream).await {
                Ok(Some(preface)) => {
                    let stream = Replayed { prefix: preface, read: 0, inner: stream };
                    let _ = http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
                Ok(None) => reject(stream).await,
                Err(_) => {}
            }
        }
    }
}

/// Reads the HTTP/2 preface: `Some` of it when the connection starts with it, `None` as soon as
/// it does not (or the peer closes early).
async fn read_preface(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut read = Vec::with_capacity(PREFACE.len());
    let mut byte = [0u8; 1];
    while read.len() < PREFACE.len() {
        if stream.read(&mut byte).await? == 0 {
            return Ok(None);
        }
        read.push(byte[0]);
        if !PREFACE.starts_with(&read) {
            return Ok(None);
        }
    }
    Ok(Some(read))
}

/// Answers a connection that is not HTTP/2 with a 400 and closes it, after the client has had
/// the chance to read the answer (closing with unread input would reset the connection).
async fn reject(mut stream: TcpStream) {
    let body = "this port speaks HTTP/2 with prior knowledge only\n";
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(response.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let drain = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

/// A connection whose first bytes, already read, are read again.
struct Replayed {
    prefix: Vec<u8>,
    read: usize,
    inner: TcpStream,
}

impl AsyncRead for Replayed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.read < this.prefix.len() {
            let rest = &this.prefix[this.read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.read += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replayed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn respond(
    request: Request<Incoming>,
    pod: Arc<Pod>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let http2 = parts.version == Version::HTTP_2;
    // Go's `RequestURI`: the request target as sent; for HTTP/2, `:path`.
    let target = if http2 {
        parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string()
    } else {
        parts.uri.to_string()
    };
    pod.requests.fetch_add(1, Ordering::SeqCst);
    {
        let mut paths = pod.paths.lock().unwrap();
        if paths.len() == PATHS_KEPT {
            paths.pop_front();
        }
        paths.push_back(target.clone());
    }
    let _ = body.collect().await;

    let delay = parts
        .uri
        .query()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "delay"))
        .map(|(_, v)| v.into_owned());
    if let Some(delay) = delay {
        match go_duration(&delay) {
            Some(d) => tokio::time::sleep(d).await,
            None => return Ok(plain(StatusCode::BAD_REQUEST, &format!("bad delay {delay:?}\n"))),
        }
    }

    let host_header = parts.headers.get(HOST).map(|h| String::from_utf8_lossy(h.as_bytes()));
    let authority = parts.uri.authority().map(|a| a.as_str().into());
    let host = if http2 { authority.or(host_header) } else { host_header.or(authority) };
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        if name == HOST {
            continue;
        }
        let values = headers
            .entry(canonical(name.as_str()))
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let serde_json::Value::Array(values) = values {
            values.push(String::from_utf8_lossy(value.as_bytes()).into());
        }
    }
    let proto = match parts.version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    };
    let description = serde_json::json!({
        "path": target,
        "host": host.unwrap_or_default(),
        "method": parts.method.as_str(),
        "proto": proto,
        "headers": headers,
        "namespace": pod.namespace,
        "pod": pod.pod,
        "httpPort": pod.port,
    });

    let mut response = Response::new(Full::new(Bytes::from(description.to_string())));
    let out = response.headers_mut();
    out.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for value in parts.headers.get_all(SET_HEADER) {
        for pair in String::from_utf8_lossy(value.as_bytes()).split(',') {
            let Some((name, value)) = pair.split_once(':') else { continue };
            let (Ok(name), Ok(value)) =
                (HeaderName::try_from(name.trim()), HeaderValue::try_from(value.trim()))
            else {
                continue;
            };
            out.insert(name, value);
        }
    }
    Ok(response)
}

fn plain(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// A header name as Go's `CanonicalMIMEHeaderKey` spells it: the first letter and every letter
/// after a hyphen upper case, the rest lower case.
fn canonical(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let c = if upper { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() };
            upper = c == '-';
            c
        })
        .collect()
}

/// A Go duration (`time.ParseDuration`): `300ms`, `1.5s`, `1m30s`, `0`. Negative durations are
/// no wait at all, as for Go's `time.Sleep`.
fn go_duration(s: &str) -> Option<Duration> {
    let (negative, mut rest) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let number = |c: char| c.is_ascii_digit() || c == '.';
    let mut seconds = 0f64;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !number(c)).unwrap_or(rest.len());
        let (value, after) = rest.split_at(end);
        if value.is_empty() || value == "." {
            return None;
        }
        let value: f64 = value.parse().ok()?;
        let end = after.find(number).unwrap_or(after.len());
        let (unit, after) = after.split_at(end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        seconds += value * scale;
        rest = after;
    }
    if negative { Some(Duration::ZERO) } else { Duration::try_from_secs_f64(seconds).ok() }
}

mod tests {
    use super::*;

    #[test]
    fn header_names_are_canonical_as_in_go() {
        assert_eq!(canonical("test-epp-endpoint-selection"), "Test-Epp-Endpoint-Selection");
        assert_eq!(canonical("x-echo-set-header"), "X-Echo-Set-Header");
        assert_eq!(canonical("content-type"), "Content-Type");
        assert_eq!(canonical("te"), "Te");
    }

    #[test]
    fn durations_parse_as_in_go() {
        assert_eq!(go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(go_duration("250us"), Some(Duration::from_micros(250)));
        assert_eq!(go_duration("0"), Some(Duration::ZERO));
        assert_eq!(go_duration("-2s"), Some(Duration::ZERO));
        for bad in ["", "1", "s", "1x", "1.2.3s", "ms5"] {
            assert_eq!(go_duration(bad), None, "{bad:?}");
        }
    }
}
