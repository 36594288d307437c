//! A real Envoy reaching aixds over TLS (xDS and the translation ext_proc on one gRPC port),
//! with certificates made for the test by the openssl command line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aixds::bootstrap::{BootstrapOptions, ClientCert, UpstreamTls};
use aixds::compile::CompileOptions;
use aixds::run::{GrpcListen, RunOptions, Running, ServerTls, TcpAuth};

use crate::envoy::manifests;
use crate::harness::*;

/// A throwaway CA (`ca.crt`, `ca.key` in its directory) and the certificates it signs, made
/// by the openssl command line.
pub(crate) struct TestCa {
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl TestCa {
    /// A CA in a directory of its own.
    pub(crate) fn new() -> TestCa {
        let temp = tempfile::tempdir().unwrap();
        let mut ca = TestCa::in_dir(temp.path());
        ca._temp = Some(temp);
        ca
    }

    /// A CA in `dir`.
    pub(crate) fn in_dir(dir: &Path) -> TestCa {
        let ca = TestCa { dir: dir.to_path_buf(), _temp: None };
        let mut req =
            vec!["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        req.extend(["-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1"]);
        req.extend(["-subj", "/CN=aixds test CA"]);
        ca.openssl(req);
        ca
    }

    pub(crate) fn ca(&self) -> String {
        std::fs::read_to_string(self.dir.join("ca.crt")).unwrap()
    }

    /// `{name}.crt` (subject `/CN={name}`, extensions `ext` in openssl's config syntax) and
    /// `{name}.key`, signed by the CA; returns both in PEM.
    pub(crate) fn leaf(&self, name: &str, ext: &str) -> (String, String) {
        std::fs::write(self.dir.join(format!("{name}.ext")), format!("{ext}\n")).unwrap();
        let [key, csr, crt, ext] = [".key", ".csr", ".crt", ".ext"].map(|s| format!("{name}{s}"));
        let subject = format!("/CN={name}");
        let mut req = vec!["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        req.extend(["-nodes", "-keyout", &key, "-out", &csr, "-subj", &subject]);
        self.openssl(req);
        let mut sign = vec!["x509", "-req", "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key"];
        sign.extend(["-CAcreateserial", "-days", "1", "-out", &crt, "-extfile", &ext]);
        self.openssl(sign);
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap();
        (read(&crt), read(&key))
    }

    fn openssl(&self, args: Vec<&str>) {
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(&self.dir)
            .output()
            .expect("run openssl (hack/install.sh installs it)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A throwaway CA, a serving certificate for `127.0.0.1` and `aixds.test` and a client
/// certificate (`envoy`), all signed by it; returns the directory holding them as
/// `ca.crt`, `server.crt`/`server.key` and `client.crt`/`client.key`.
pub(crate) fn certificates(dir: &Path) -> PathBuf {
    let ca = TestCa::in_dir(dir);
    ca.leaf("server", "subjectAltName=IP:127.0.0.1,DNS:aixds.test\nextendedKeyUsage=serverAuth");
    ca.leaf("client", "subjectAltName=DNS:envoy\nextendedKeyUsage=clientAuth");
    dir.to_path_buf()
}

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).to_string_lossy().into_owned()
}

/// Certificates, and manifests routing `model-a` on `port` to upstream A.
struct Fixture {
    dir: tempfile::TempDir,
    certs: PathBuf,
    port: u16,
    manifest_dir: PathBuf,
    _upstream: Upstream,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let certs = certificates(dir.path());
        let upstream = Upstream::start("A").await;
        let port = free_port();
        let manifest_dir = dir.path().join("manifests");
        std::fs::create_dir(&manifest_dir).unwrap();
        write_atomic(
            manifest_dir.join("gateway.yaml"),
            manifests(port, &[("model-a", vec![("a", upstream.addr, 1)])]),
        );
        Fixture { dir, certs, port, manifest_dir, _upstream: upstream }
    }
}

/// aixds serving xDS and the ext_proc over TLS that requires a client certificate, and an
/// Envoy started apart, which connects with `tls`.
async fn start(
    manifest_dir: &Path,
    certs: &Path,
    port: u16,
    tls: UpstreamTls,
) -> (Running, u16, tokio::process::Child) {
    let server_tls = ServerTls {
        cert: certs.join("server.crt"),
        key: certs.join("server.key"),
        client_ca: Some(certs.join("ca.crt")),
    };
    let grpc = GrpcListen::new("127.0.0.1:0".parse().unwrap(), Some(server_tls), false).unwrap();
    assert!(matches!(grpc.auth, TcpAuth::MutualTls(_)));
    let running = aixds::run::start(RunOptions {
        source: aixds::source::SourceOptions::Files(vec![manifest_dir.to_path_buf()]),
        grpc: Some(grpc),
        admin_listen: None,
        picker: None,
        compile: CompileOptions {
            listener_address: "127.0.0.1".into(),
            default_port: port,
            access_log: None,
            picker_client_cert: None,
            ratelimit_fail_closed: false,
            xff_trusted_hops: 0,
            controller_name: None,
        },
        envoy: None,
        extproc: Default::default(),
        debounce: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        ratelimit: Default::default(),
        drain: Default::default(),
    })
    .await
    .expect("aixds starts");
    let admin = free_port();
    let bootstrap = aixds::bootstrap::bootstrap(&BootstrapOptions {
        xds_address: running.xds_addr.expect("a TCP listener").to_string(),
        node_id: "tls".into(),
        admin_port: admin,
        tls: Some(tls),
        ..Default::default()
    })
    .unwrap();
    let file = manifest_dir.parent().unwrap().join("bootstrap.json");
    std::fs::write(&file, bootstrap.to_string()).unwrap();
    let envoy = tokio::process::Command::new(envoy_bin())
        .arg("-c")
        .arg(&file)
        .args(["--disable-hot-restart", "--concurrency", "1", "--log-level", "error"])
        .kill_on_drop(true)
        .spawn()
        .expect("start envoy");
    (running, admin, envoy)
}

/// The value of Envoy's counter `name` (0 while Envoy has not made it), or `None` while
/// Envoy's admin does not answer yet.
async fn counter(admin: u16, name: &str) -> Option<u64> {
    let stats = try_admin_get(admin, &format!("/stats?filter={name}")).await.ok()?;
    Some(
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_gets_its_config_and_translation_over_mutual_tls() {
    let Fixture { dir: _dir, certs, port, manifest_dir, _upstream } = Fixture::new().await;
    let tls = UpstreamTls {
        ca: path(&certs, "ca.crt"),
        client_cert: Some(ClientCert {
            cert: path(&certs, "client.crt"),
            key: path(&certs, "client.key"),
        }),
        server_name: None,
    };
    let (running, admin, _envoy) = start(&manifest_dir, &certs, port, tls).await;

    // The listener, route and cluster came over xDS; the request was translated by the
    // ext_proc over the same TLS connection pool (the route fails closed without it).
    eventually(30, "model-a served by A over a TLS-configured Envoy", || async {
        (served_by(port, "model-a").await == Ok("A".into())).then_some(())
    })
    .await;
    let anthropic = request(
        port,
        "POST",
        "/v1/messages",
        &[],
        r#"{"model":"model-a","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await
    .unwrap();
    assert_eq!(anthropic.status, 200, "{}", anthropic.body);
    assert_eq!(anthropic.json()["type"], "message", "{}", anthropic.body);
    let handshakes = counter(admin, "cluster.aixds-xds.ssl.handshake").await.unwrap_or(0);
    assert!(handshakes >= 1, "Envoy's TLS handshakes with aixds: {handshakes}");
    assert_eq!(rejected_updates(admin).await, 0);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_refuses_an_aixds_whose_certificate_lacks_the_expected_name() {
    let Fixture { dir: _dir, certs, port, manifest_dir, _upstream } = Fixture::new().await;
    let tls = UpstreamTls {
        ca: path(&certs, "ca.crt"),
        client_cert: Some(ClientCert {
            cert: path(&certs, "client.crt"),
            key: path(&certs, "client.key"),
        }),
        server_name: Some("someone-else.test".into()),
    };
    let (running, admin, _envoy) = start(&manifest_dir, &certs, port, tls).await;

    let failures = eventually(30, "Envoy rejects the certificate's names", || async {
        counter(admin, "cluster.aixds-xds.ssl.fail_verify_san").await.filter(|n| *n > 0)
    })
    .await;
    assert!(failures > 0);
    let listeners = admin_get(admin, "/listeners?format=json").await;
    assert!(!listeners.contains(&port.to_string()), "no listener may arrive: {listeners}");
    assert!(running.clients.list().is_empty(), "no Envoy got an xDS stream");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aixds_refuses_an_envoy_without_a_client_certificate() {
    let Fixture { dir: _dir, certs, port, manifest_dir, _upstream } = Fixture::new().await;
    // Trusts aixds's certificate, but has none of its own to show.
    let tls = UpstreamTls { ca: path(&certs, "ca.crt"), client_cert: None, server_name: None };
    let (running, admin, _envoy) = start(&manifest_dir, &certs, port, tls).await;

    eventually(30, "aixds refuses Envoy's handshakes", || async {
        let mut refused = 0;
        for name in
            ["upstream_cx_connect_fail", "ssl.connection_error", "upstream_cx_destroy_remote"]
        {
            refused += counter(admin, &format!("cluster.aixds-xds.{name}")).await?;
        }
        (refused >= 2).then_some(())
    })
    .await;
    let listeners = admin_get(admin, "/listeners?format=json").await;
    assert!(!listeners.contains(&port.to_string()), "no listener may arrive: {listeners}");
    assert!(running.clients.list().is_empty(), "no Envoy got an xDS stream");
    running.shutdown().await;
}
