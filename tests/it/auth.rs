//! `aixds run` as a user starts it, attacked and restarted: no port it opens hands a credential
//! to a stranger, its Envoy dies with it, and replicas restart without losing requests.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as In;
use envoy_types::pb::envoy::service::ext_proc::v3::{HttpBody, HttpHeaders, ProcessingRequest};
use tokio::process::{Child, Command};
use tokio_stream::wrappers::ReceiverStream;

use crate::envoy::manifests;
use crate::harness::*;

const CANARY: &str = "sk-canary-0123456789";

/// `manifests` plus an API key for backend `a`.
fn keyed_manifests(port: u16, upstream: SocketAddr) -> String {
    let mut out = manifests(port, &[("model-a", vec![("a", upstream, 1)])]);
    out.push_str(&format!(
        "---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: BackendSecurityPolicy\n\
         metadata: {{name: a-key}}\nspec:\n  targetRefs: [{{group: aigateway.envoyproxy.io, \
         kind: AIServiceBackend, name: a}}]\n  type: APIKey\n  apiKey: {{secretRef: {{name: a-key}}}}\n\
         ---\napiVersion: v1\nkind: Secret\nmetadata: {{name: a-key}}\nstringData: {{apiKey: {CANARY}}}\n"
    ));
    out
}

/// `aixds run DIR` with its own Envoy, as a user would start it (ports moved off the defaults
/// so tests can run side by side).
fn run_with_envoy(dir: &Path, port: u16, envoy_admin: u16) -> Child {
    run_with_envoy_and(dir, port, envoy_admin, &[])
}

fn run_with_envoy_and(dir: &Path, port: u16, envoy_admin: u16, extra: &[&str]) -> Child {
    aixds_run(dir, port, envoy_admin, extra).spawn().expect("start aixds run")
}

/// `aixds run` with its own Envoy, not started yet.
fn aixds_run(dir: &Path, port: u16, envoy_admin: u16, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_aixds"));
    command
        .arg("run")
        .arg(dir)
        .args(extra)
        .args(["--envoy", &envoy_bin().to_string_lossy()])
        .args(["--admin-address", "127.0.0.1:0", "--picker-address", "127.0.0.1:0"])
        .args(["--listener-address", "127.0.0.1", "--default-port", &port.to_string()])
        .args(["--envoy-admin-port", &envoy_admin.to_string(), "--node-id", "auth"])
        .env("AIXDS_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// The inodes of the sockets process `pid` holds open.
fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter_map(|target| {
                    let target = target.to_string_lossy().into_owned();
                    target.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The TCP ports process `pid` listens on (IPv4 and IPv6).
fn listening_ports(pid: u32) -> BTreeSet<u16> {
    let inodes = socket_inodes(pid);
    let mut ports = BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address, st (0A = LISTEN), inode
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "0A"
                && inode.parse::<u64>().is_ok_and(|i| inodes.contains(&i))
                && let Some(port) = port
            {
                ports.insert(port);
            }
        }
    }
    ports
}

/// The abstract Unix socket names process `pid` holds (`@name`; a listener and its accepted
/// connections share one).
fn abstract_sockets(pid: u32) -> BTreeSet<String> {
    let inodes = socket_inodes(pid);
    let text = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let inode: u64 = fields.get(6)?.parse().ok()?;
            let path = fields.get(7)?;
            (inodes.contains(&inode) && path.starts_with('@')).then(|| path.to_string())
        })
        .collect()
}

fn header(key: &str, value: &str) -> HeaderValue {
    HeaderValue { key: key.into(), raw_value: value.as_bytes().to_vec(), ..Default::default() }
}

/// What a stranger gets back from an upstream-phase ext_proc call naming backend `a` on
/// `port`: every response's debug text, or the error that refused the call.
async fn ext_proc_as_stranger(port: u16) -> String {
    let call = async {
        let mut client = ExternalProcessorClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .map_err(|e| e.to_string())?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request.metadata_mut().insert("x-aixds-backend", "aisb/default/a".parse().unwrap());
        let headers = HeaderMap {
            headers: vec![
                header(":method", "POST"),
                header(":path", "/v1/chat/completions"),
                header(":authority", "gateway"),
            ],
        };
        let body = br#"{"model":"model-a","messages":[{"role":"user","content":"hi"}]}"#;
        for message in [
            In::RequestHeaders(HttpHeaders { headers: Some(headers), ..Default::default() }),
            In::RequestBody(HttpBody {
                body: body.to_vec(),
                end_of_stream: true,
                ..Default::default()
            }),
        ] {
            let _ =
                tx.send(ProcessingRequest { request: Some(message), ..Default::default() }).await;
        }
        let mut responses = client.process(request).await.map_err(|e| e.to_string())?.into_inner();
        let mut seen = String::new();
        while let Ok(Ok(Some(response))) =
            tokio::time::timeout(Duration::from_secs(2), responses.message()).await
        {
            seen.push_str(&format!("{response:?}"));
        }
        Ok::<_, String>(seen)
    };
    match tokio::time::timeout(Duration::from_secs(5), call).await {
        Ok(Ok(seen)) => seen,
        Ok(Err(e)) => format!("refused: {e}"),
        Err(_) => "refused: timed out".into(),
    }
}

/// What a stranger gets back from a rate limit check on `port`, or the error that refused it.
async fn ratelimit_as_stranger(port: u16) -> String {
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
    use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
    let call = async {
        let mut client = RateLimitServiceClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .map_err(|e| e.to_string())?;
        let entry = |key: &str, value: &str| Entry { key: key.into(), value: value.into() };
        let request = RateLimitRequest {
            domain: "aixds".into(),
            descriptors: vec![RateLimitDescriptor {
                entries: vec![entry("aixds.bucket", "b"), entry("aixds.limit", "1/Hour")],
                ..Default::default()
            }],
            hits_addend: 1000,
        };
        let answer = client.should_rate_limit(request).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(format!("{:?}", answer.into_inner()))
    };
    match tokio::time::timeout(Duration::from_secs(5), call).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => format!("refused: {e}"),
        Err(_) => "refused: timed out".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_port_of_aixds_run_hands_a_credential_to_a_stranger() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("requests.jsonl");
    let upstream = Upstream::start_recording("A", &record).await;
    let manifest_dir = dir.path().join("manifests");
    std::fs::create_dir(&manifest_dir).unwrap();
    let port = free_port();
    std::fs::write(manifest_dir.join("gateway.yaml"), keyed_manifests(port, upstream.addr))
        .unwrap();
    let envoy_admin = free_port();
    let aixds = run_with_envoy(&manifest_dir, port, envoy_admin);
    let pid = aixds.id().unwrap();

    // The key is in use: Envoy, over the private socket, has it injected for the upstream.
    eventually(60, "model-a served by A", || async {
        (served_by(port, "model-a").await == Ok("A".into())).then_some(())
    })
    .await;
    let auth = recorded(&record).last().unwrap()["headers"]["authorization"].clone();
    assert_eq!(auth, format!("Bearer {CANARY}"), "the upstream gets the key");

    // Every TCP port aixds opened (admin, picker; no gRPC port by default) answers a stranger
    // without the key.
    let ports = listening_ports(pid);
    assert_eq!(ports.len(), 2, "admin and picker only, no gRPC port: {ports:?}");
    for port in &ports {
        let seen = ext_proc_as_stranger(*port).await;
        assert!(!seen.contains(CANARY), "port {port} handed out the key: {seen}");
        // Nor does any of them count rate limits for a stranger, who could spend (or learn)
        // another tenant's budget.
        let counted = ratelimit_as_stranger(*port).await;
        assert!(counted.starts_with("refused"), "port {port} counted for a stranger: {counted}");
    }

    // The private socket exists, and another user's process is cut off at once.
    let sockets = abstract_sockets(pid);
    assert_eq!(sockets.len(), 1, "one private socket: {sockets:?}");
    let name = sockets.first().unwrap().trim_start_matches('@');
    // Perl's Socket module is part of every Debian (perl-base), and readable by user nobody.
    let script = format!(
        "use Socket; $SIG{{PIPE}} = 'IGNORE'; alarm 5; socket(my $s, PF_UNIX, SOCK_STREAM, 0) or die $!; \
         connect($s, pack_sockaddr_un(\"\\0{name}\")) or die \"connect: $!\"; \
         syswrite($s, \"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n\\0\\0\\0\\4\\0\\0\\0\\0\\0\"); \
         my $n = sysread($s, my $buf, 65536); print defined $n ? $n : 0;"
    );
    let stranger = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "perl", "-e", &script])
        .output()
        .expect("run setpriv (util-linux)");
    assert!(stranger.status.success(), "{}", String::from_utf8_lossy(&stranger.stderr));
    assert_eq!(
        String::from_utf8_lossy(&stranger.stdout),
        "0",
        "another user's connection must be closed without an HTTP/2 answer"
    );
    assert_eq!(rejected_updates(envoy_admin).await, 0);
}

/// The pid of a child of `parent` whose command line contains `needle`.
fn child_of(parent: u32, needle: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
        let ppid: u32 = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        (ppid == parent && String::from_utf8_lossy(&cmdline).contains(needle)).then_some(pid)
    })
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_dies_with_a_killed_aixds_run_and_a_rerun_works() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start("A").await;
    let port = free_port();
    std::fs::write(
        dir.path().join("gateway.yaml"),
        manifests(port, &[("m", vec![("a", upstream.addr, 1)])]),
    )
    .unwrap();
    let envoy_admin = free_port();
    // A temporary directory of its own, so that other tests' files cannot be taken for its.
    let tmp = tempfile::tempdir().unwrap();
    let mut aixds = aixds_run(dir.path(), port, envoy_admin, &[])
        .env("TMPDIR", tmp.path())
        .spawn()
        .expect("start aixds run");
    eventually(60, "m served", || async {
        (served_by(port, "m").await == Ok("A".into())).then_some(())
    })
    .await;
    let envoy = child_of(aixds.id().unwrap(), "--config-yaml").expect("Envoy is aixds's child");

    aixds.start_kill().unwrap();
    let _ = aixds.wait().await;
    eventually(10, "Envoy gone with aixds", || async { (!alive(envoy)).then_some(()) }).await;
    for p in [port, envoy_admin] {
        eventually(10, "the port is free again", || async {
            std::net::TcpListener::bind(("127.0.0.1", p)).is_ok().then_some(())
        })
        .await;
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "aixds or Envoy left files in their TMPDIR: {left:?}");

    let _again = run_with_envoy(dir.path(), port, envoy_admin);
    eventually(60, "m served after a rerun", || async {
        (served_by(port, "m").await == Ok("A".into())).then_some(())
    })
    .await;
}

/// One replica on `ip:xds_port` that drains quickly.
fn replica(dir: &Path, ip: &str, xds_port: u16) -> Child {
    aixds_replica(dir, ip, xds_port, &["--drain-delay", "2", "--drain-timeout", "10"])
}

/// Requests sent and failed by a steady load.
#[derive(Default)]
struct Load {
    sent: AtomicU64,
    failed: AtomicU64,
}

/// `clients` loops sending one request every 20 ms each until `stop`.
fn steady_load(port: u16, clients: usize, stop: tokio::sync::watch::Receiver<bool>) -> Arc<Load> {
    let load = Arc::new(Load::default());
    for _ in 0..clients {
        let (load, stop) = (load.clone(), stop.clone());
        tokio::spawn(async move {
            while !*stop.borrow() {
                let ok = served_by(port, "m").await == Ok("A".into());
                load.sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    load.failed.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    load
}

/// SIGTERM, as Kubernetes sends it, then the exit.
async fn terminate(child: &mut Child) {
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    assert!(exit.is_ok(), "a replica exits within its drain time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restarts_lose_no_request_and_a_crash_loses_under_one_percent() {
    let upstream = Upstream::start("A").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("gateway.yaml"),
        manifests(port, &[("m", vec![("a", upstream.addr, 1)])]),
    )
    .unwrap();
    let xds_port = free_port_on(&["127.0.0.1", "127.0.0.2"]);
    let mut first = replica(dir.path(), "127.0.0.1", xds_port);
    let mut second = replica(dir.path(), "127.0.0.2", xds_port);
    let admin = free_port();
    let _envoy = start_envoy(&aixds::bootstrap::BootstrapOptions {
        xds_address: format!("127.0.0.1:{xds_port},127.0.0.2:{xds_port}"),
        node_id: "rolling".into(),
        admin_port: admin,
        ..Default::default()
    });
    eventually(60, "m served", || async {
        (served_by(port, "m").await == Ok("A".into())).then_some(())
    })
    .await;
    let healthy = |n: u64| async move {
        let stats = admin_get(admin, "/clusters").await;
        let healthy = stats
            .lines()
            .filter(|l| l.starts_with("aixds-xds::") && l.ends_with("::health_flags::healthy"))
            .count();
        (healthy as u64 == n).then_some(())
    };
    eventually(30, "both replicas healthy", || healthy(2)).await;

    // A rolling restart, one replica at a time, under steady load (~4 clients × 50/s).
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = steady_load(port, 4, stopped);
    tokio::time::sleep(Duration::from_secs(1)).await;
    terminate(&mut first).await;
    first = replica(dir.path(), "127.0.0.1", xds_port);
    eventually(30, "the first replica back", || healthy(2)).await;
    terminate(&mut second).await;
    second = replica(dir.path(), "127.0.0.2", xds_port);
    eventually(30, "the second replica back", || healthy(2)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop.send(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (sent, failed) = (load.sent.load(Ordering::Relaxed), load.failed.load(Ordering::Relaxed));
    assert!(sent > 200, "the load ran: {sent} requests");
    assert_eq!(failed, 0, "{failed} of {sent} requests failed during the rolling restart");

    // A crash: the other replica takes over; what is lost is under 1% over the next seconds.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = steady_load(port, 4, stopped);
    tokio::time::sleep(Duration::from_secs(1)).await;
    first.start_kill().unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let _ = stop.send(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (sent, failed) = (load.sent.load(Ordering::Relaxed), load.failed.load(Ordering::Relaxed));
    assert!(sent > 200, "the load ran: {sent} requests");
    assert!(failed * 100 < sent, "{failed} of {sent} requests failed after a replica crashed");
    eprintln!("rolling restart: 0 lost; crash: {failed} of {sent} lost");
    drop(second);
}

/// A draining `aixds run` keeps serving; a second signal (an impatient Ctrl-C) stops it, and
/// its Envoy, at once instead of after the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_keeps_serving_and_a_second_signal_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start("A").await;
    let port = free_port();
    std::fs::write(
        dir.path().join("gateway.yaml"),
        manifests(port, &[("m", vec![("a", upstream.addr, 1)])]),
    )
    .unwrap();
    let mut aixds = run_with_envoy_and(dir.path(), port, free_port(), &["--drain-delay", "60"]);
    eventually(60, "m served", || async {
        (served_by(port, "m").await == Ok("A".into())).then_some(())
    })
    .await;
    let envoy = child_of(aixds.id().unwrap(), "--config-yaml").expect("Envoy is aixds's child");
    let pid = aixds.id().unwrap().to_string();
    let signal = || std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(signal().success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..10 {
        assert_eq!(served_by(port, "m").await, Ok("A".into()), "served while draining");
    }
    assert!(signal().success());
    let exit = tokio::time::timeout(Duration::from_secs(20), aixds.wait()).await;
    assert!(exit.is_ok(), "the second signal stops aixds long before its 60 s drain");
    eventually(10, "Envoy gone with aixds", || async { (!alive(envoy)).then_some(()) }).await;
}
