//! A real Envoy reaching aixds over TLS (xDS and the translation ext_proc on one gRPC port),
//! with certificates made for the test by the openssl command line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aixds::bootstrap::{BootstrapOptions, ClientCert, UpstreamTls};
use aixds::compile::CompileOptions;
use aixds::run::{EnvoyOptions, RunOptions, Running, ServerTls};

use crate::envoy::manifests;
use crate::harness::*;

/// A throwaway CA, a serving certificate for `127.0.0.1` and `aixds.test` and a client
/// certificate (`envoy`), all signed by it; returns the directory holding them as
/// `ca.crt`, `server.crt`/`server.key` and `client.crt`/`client.key`.
pub(crate) fn certificates(dir: &Path) -> PathBuf {
    let openssl = |args: Vec<&str>| {
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .output()
            .expect("run openssl (hack/install.sh installs it)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let mut ca = vec!["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    ca.extend(["-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1"]);
    ca.extend(["-subj", "/CN=aixds test CA"]);
    openssl(ca);
    for (name, ext) in [
        ("server", "subjectAltName=IP:127.0.0.1,DNS:aixds.test\nextendedKeyUsage=serverAuth\n"),
        ("client", "subjectAltName=DNS:envoy\nextendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let [key, csr, crt, ext] =
            [".key", ".csr", ".crt", ".ext"].map(|suffix| format!("{name}{suffix}"));
        let subject = format!("/CN={name}");
        let mut req = vec!["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        req.extend(["-nodes", "-keyout", &key, "-out", &csr, "-subj", &subject]);
        openssl(req);
        openssl(vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            &crt,
            "-extfile",
            &ext,
        ]);
    }
    dir.to_path_buf()
}

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).to_string_lossy().into_owned()
}

/// aixds serving TLS that requires a client certificate, and an Envoy it starts with `tls`.
async fn start(manifest_dir: &Path, certs: &Path, port: u16, tls: UpstreamTls) -> (Running, u16) {
    let admin = free_port();
    let running = aixds::run::start(RunOptions {
        source: aixds::source::SourceOptions::Files(vec![manifest_dir.to_path_buf()]),
        xds_listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(ServerTls {
            cert: certs.join("server.crt"),
            key: certs.join("server.key"),
            client_ca: Some(certs.join("ca.crt")),
        }),
        admin_listen: None,
        picker: None,
        compile: CompileOptions {
            listener_address: "127.0.0.1".into(),
            default_port: port,
            access_log: None,
        },
        envoy: Some(EnvoyOptions {
            binary: envoy_bin(),
            bootstrap: BootstrapOptions {
                node_id: "tls".into(),
                admin_port: admin,
                tls: Some(tls),
                ..Default::default()
            },
            log_level: "error".into(),
            concurrency: Some(1),
        }),
        extproc: Default::default(),
        debounce: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    })
    .await
    .expect("aixds starts");
    (running, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_gets_its_config_and_translation_over_mutual_tls() {
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
    let tls = UpstreamTls {
        ca: path(&certs, "ca.crt"),
        client_cert: Some(ClientCert {
            cert: path(&certs, "client.crt"),
            key: path(&certs, "client.key"),
        }),
        server_name: None,
    };
    let (running, admin) = start(&manifest_dir, &certs, port, tls).await;

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
    let stats = admin_get(admin, "/stats?filter=cluster.aixds-xds.ssl.handshake").await;
    let handshakes: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("cluster.aixds-xds.ssl.handshake: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(handshakes >= 1, "Envoy's TLS handshakes with aixds: {stats}");
    assert_eq!(rejected_updates(admin).await, 0);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_refuses_an_aixds_whose_certificate_lacks_the_expected_name() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certificates(dir.path());
    let port = free_port();
    let manifest_dir = dir.path().join("manifests");
    std::fs::create_dir(&manifest_dir).unwrap();
    let upstream = Upstream::start("A").await;
    write_atomic(
        manifest_dir.join("gateway.yaml"),
        manifests(port, &[("model-a", vec![("a", upstream.addr, 1)])]),
    );
    let tls = UpstreamTls {
        ca: path(&certs, "ca.crt"),
        client_cert: Some(ClientCert {
            cert: path(&certs, "client.crt"),
            key: path(&certs, "client.key"),
        }),
        server_name: Some("someone-else.test".into()),
    };
    let (running, admin) = start(&manifest_dir, &certs, port, tls).await;

    let failures = eventually(30, "Envoy rejects the certificate's names", || async {
        let stats = try_admin_get(admin, "/stats?filter=cluster.aixds-xds.ssl.fail_verify_san")
            .await
            .ok()?;
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cluster.aixds-xds.ssl.fail_verify_san: "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|n| *n > 0)
    })
    .await;
    assert!(failures > 0);
    let listeners = admin_get(admin, "/listeners?format=json").await;
    assert!(!listeners.contains(&port.to_string()), "no listener may arrive: {listeners}");
    assert!(running.clients.list().is_empty(), "no Envoy got an xDS stream");
    running.shutdown().await;
}
