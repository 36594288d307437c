//! A model server's load, from its Prometheus text `/metrics` (vLLM's names).
//!
//! Takes: an endpoint `ip:port`. Gives: [`ServerMetrics`], or why there are none. One scrape is
//! one HTTP/1.1 GET on a fresh connection, bounded in time and size; a failure only means that
//! this endpoint is scored on what the picker sent it since its last good scrape.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

pub const WAITING: &str = "vllm:num_requests_waiting";
pub const RUNNING: &str = "vllm:num_requests_running";
pub const KV_CACHE_USAGE: &str = "vllm:kv_cache_usage_perc";
/// The name older vLLM releases give the KV-cache use.
const GPU_CACHE_USAGE: &str = "vllm:gpu_cache_usage_perc";
/// A metrics page larger than this is not read.
const MAX_BYTES: usize = 4 * 1024 * 1024;

/// One model server's load. Summed over label sets (one per model it serves); the KV-cache use
/// is the largest of them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServerMetrics {
    pub waiting: f64,
    pub running: f64,
    /// `0..=1`.
    pub kv_cache_usage: f64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetricsError {
    #[error("no {WAITING}, {RUNNING} or {KV_CACHE_USAGE} sample")]
    NoSamples,
    #[error("GET /metrics: {0}")]
    Http(String),
    #[error("GET /metrics answered {0}")]
    Status(u16),
    #[error("GET /metrics took longer than {0:?}")]
    Timeout(Duration),
}

/// Reads the three metrics from a Prometheus text exposition; other lines are skipped.
pub fn parse(text: &str) -> Result<ServerMetrics, MetricsError> {
    let mut metrics = ServerMetrics::default();
    let (mut found, mut kv_found) = (false, false);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = sample(line) else { continue };
        match name {
            WAITING => metrics.waiting += value,
            RUNNING => metrics.running += value,
            KV_CACHE_USAGE => {
                metrics.kv_cache_usage = metrics.kv_cache_usage.max(value);
                kv_found = true;
            }
            // Only when the current name is absent.
            GPU_CACHE_USAGE if !kv_found => {
                metrics.kv_cache_usage = metrics.kv_cache_usage.max(value)
            }
            GPU_CACHE_USAGE => {}
            _ => continue,
        }
        found = true;
    }
    if found { Ok(metrics) } else { Err(MetricsError::NoSamples) }
}

/// `name{labels} value [timestamp]` → (name, value); `None` for a value that is not a finite
/// number.
fn sample(line: &str) -> Option<(&str, f64)> {
    let (name, rest) = match line.find(['{', ' ', '\t']) {
        Some(i) if line.as_bytes()[i] == b'{' => {
            // Label values may hold spaces and braces inside quotes; the set ends at the last '}'.
            let close = line.rfind('}')?;
            (&line[..i], &line[close + 1..])
        }
        Some(i) => (&line[..i], &line[i..]),
        None => return None,
    };
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    value.is_finite().then_some((name, value))
}

/// GETs `http://{addr}/metrics` and parses it, within `timeout` overall.
pub async fn scrape(addr: SocketAddr, timeout: Duration) -> Result<ServerMetrics, MetricsError> {
    let text = tokio::time::timeout(timeout, get_metrics(addr))
        .await
        .map_err(|_| MetricsError::Timeout(timeout))??;
    parse(&text)
}

async fn get_metrics(addr: SocketAddr) -> Result<String, MetricsError> {
    let http = |e: &dyn std::fmt::Display| MetricsError::Http(e.to_string());
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| http(&e))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| http(&e))?;
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get("/metrics")
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::ACCEPT, "text/plain")
        .body(Empty::<Bytes>::new())
        .map_err(|e| http(&e))?;
    let result = async {
        let response = sender.send_request(request).await.map_err(|e| http(&e))?;
        if !response.status().is_success() {
            return Err(MetricsError::Status(response.status().as_u16()));
        }
        let body = Limited::new(response.into_body(), MAX_BYTES)
            .collect()
            .await
            .map_err(|e| http(&*e))?
            .to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const VLLM: &str = r#"# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 1.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 7.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.5 1712345678000
vllm:prompt_tokens_total{model_name="m"} 1234.0
"#;

    #[test]
    fn reads_vllm_metrics_summed_over_engines() {
        let m = parse(VLLM).unwrap();
        assert_eq!(m, ServerMetrics { waiting: 7.0, running: 4.0, kv_cache_usage: 0.5 });
    }

    #[test]
    fn unlabelled_samples_and_the_old_cache_name() {
        let m = parse("vllm:num_requests_waiting 2\nvllm:gpu_cache_usage_perc 0.75\n").unwrap();
        assert_eq!(m, ServerMetrics { waiting: 2.0, running: 0.0, kv_cache_usage: 0.75 });
        // The current name wins over the old one wherever it appears.
        let both = parse("vllm:kv_cache_usage_perc 0.1\nvllm:gpu_cache_usage_perc 0.9\n").unwrap();
        assert_eq!(both.kv_cache_usage, 0.1);
    }

    #[test]
    fn labels_with_spaces_and_braces() {
        let m = parse(r#"vllm:num_requests_waiting{model_name="a {b} c"} 5"#).unwrap();
        assert_eq!(m.waiting, 5.0);
    }

    #[test]
    fn pages_without_the_metrics_or_with_garbage_are_errors() {
        assert_eq!(parse("# nothing\nother_metric 1\n"), Err(MetricsError::NoSamples));
        assert_eq!(parse(""), Err(MetricsError::NoSamples));
        assert_eq!(
            parse("vllm:num_requests_waiting NaN\nvllm:num_requests_running{x=\"1\" 2\n"),
            Err(MetricsError::NoSamples)
        );
        // A bad line among good ones is skipped.
        assert_eq!(
            parse("vllm:num_requests_waiting abc\nvllm:num_requests_running 2").unwrap().running,
            2.0
        );
    }

    #[tokio::test]
    async fn scrapes_over_http_and_reports_failures() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for status in ["200 OK", "500 Internal Server Error"] {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await.unwrap();
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{VLLM}\r\n0\r\n\r\n",
                    VLLM.len()
                );
                socket.write_all(reply.as_bytes()).await.unwrap();
            }
            // Then one that never answers.
            let (_socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let timeout = Duration::from_millis(500);
        assert_eq!(scrape(addr, timeout).await.unwrap().waiting, 7.0);
        assert_eq!(scrape(addr, timeout).await, Err(MetricsError::Status(500)));
        assert_eq!(scrape(addr, timeout).await, Err(MetricsError::Timeout(timeout)));
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert!(matches!(scrape(closed, timeout).await, Err(MetricsError::Http(_))));
    }
}
