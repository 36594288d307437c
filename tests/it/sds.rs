//! TLS certificates served over SDS: which Secrets the compiler emits for Gateway listeners
//! (across namespaces only with a ReferenceGrant), what a Secret's rotation sends, a real Envoy
//! loading the emitted certificate, a real Envoy fetching it over ADS for a TLS listener and
//! serving the rotated one, and `aixds run` end to end: a verified HTTPS request through a
//! Gateway's HTTPS listener, then the rotated certificate. Certificates are made by openssl at
//! test time.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, LazyLock};

use aixds::api::{Kind, Object, ObjectKey};
use aixds::bootstrap::BootstrapOptions;
use aixds::compile::{CompileOptions, Compiler};
use aixds::xds::{AdsServer, Resource, SnapshotStore, TypeUrl, Update};
use envoy_types::pb::envoy::config::bootstrap::v3::{Bootstrap, bootstrap::StaticResources};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, SocketAddress,
    TransportSocket, address, config_source, data_source, socket_address, transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteConfiguration, RouteMatch, VirtualHost, route, route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret, TlsCertificate, secret,
};
use envoy_types::util::pack_any;
use prost::Message;

use crate::builders::parse;
use crate::compile::Harness;
use crate::harness::*;

/// Two certificates with their keys, made once per test run: `(crt, key)` of a CA and of a
/// server certificate it signs.
pub(crate) static PAIRS: LazyLock<[(String, String); 2]> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let certs = crate::tls::certificates(dir.path());
    let read = |f: &str| std::fs::read_to_string(certs.join(f)).unwrap();
    [(read("ca.crt"), read("ca.key")), (read("server.crt"), read("server.key"))]
});

/// A `kubernetes.io/tls` Secret holding `crt` and `key`.
pub(crate) fn tls_secret_yaml(ns: &str, name: &str, crt: &str, key: &str) -> String {
    // JSON strings are YAML double-quoted strings: the PEM's newlines survive.
    let (crt, key) = (serde_json::to_string(crt).unwrap(), serde_json::to_string(key).unwrap());
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         type: kubernetes.io/tls\nstringData: {{tls.crt: {crt}, tls.key: {key}}}\n"
    )
}

fn tls_secret(ns: &str, name: &str, pair: usize) -> Object {
    let (crt, key) = &PAIRS[pair];
    parse(&tls_secret_yaml(ns, name, crt, key))
}

/// A Gateway in `ns` with an HTTPS listener serving the Secret `secret` (`name` or `ns/name`).
fn gateway(ns: &str, secret: &str) -> Object {
    let target = match secret.split_once('/') {
        Some((secret_ns, name)) => format!("name: {name}, namespace: {secret_ns}"),
        None => format!("name: {secret}"),
    };
    parse(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: {ns}}}\n\
         spec: {{gatewayClassName: aixds, listeners: [{{name: https, protocol: HTTPS, port: 8443, \
         tls: {{certificateRefs: [{{{target}}}]}}}}]}}\n"
    ))
}

fn grant(from_ns: &str, ns: &str) -> Object {
    parse(&format!(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: certs, namespace: {ns}}}\n\
         spec: {{from: [{{group: gateway.networking.k8s.io, kind: Gateway, namespace: {from_ns}}}], \
         to: [{{group: '', kind: Secret}}]}}\n"
    ))
}

/// A graph, its compiler and the store it publishes to, changed as the run loop changes them.
/// The Secrets `live` serves, by name.
fn secrets(live: &Harness) -> BTreeMap<String, TlsCertificate> {
    live.store
        .load()
        .resources(TypeUrl::Secret)
        .values()
        .map(|r| (r.name.clone(), certificate(&Secret::decode(r.body.value.as_slice()).unwrap())))
        .collect()
}

fn certificate(secret: &Secret) -> TlsCertificate {
    match &secret.r#type {
        Some(secret::Type::TlsCertificate(c)) => c.clone(),
        other => panic!("not a TLS certificate: {other:?}"),
    }
}

/// The served chain's PEM.
fn chain_pem(cert: &TlsCertificate) -> Vec<u8> {
    match cert.certificate_chain.as_ref().and_then(|d| d.specifier.as_ref()) {
        Some(data_source::Specifier::InlineBytes(b)) => b.clone(),
        other => panic!("{other:?}"),
    }
}

const SDS_NAME: &str = "secret/certs/cert";

/// What changes when the HTTPS listener on 8443 comes or goes with its certificate.
fn with_listener() -> Vec<(TypeUrl, String)> {
    vec![
        (TypeUrl::Listener, "listener-8443".into()),
        (TypeUrl::ScopedRouteConfiguration, "route-8443".into()),
        (TypeUrl::RouteConfiguration, "route-8443".into()),
        (TypeUrl::Secret, SDS_NAME.into()),
    ]
}

#[test]
fn a_certificate_in_another_namespace_is_served_only_while_a_grant_permits_it() {
    let mut live =
        Harness::new(vec![gateway("team", "certs/cert"), tls_secret("certs", "cert", 1)]);
    assert!(secrets(&live).is_empty(), "no grant: refused (RefNotPermitted)");
    live.assert_matches_full();

    let changed = live.apply(grant("team", "certs"));
    // The HTTPS listener is served, or left out, with its certificate.
    assert_eq!(changed, with_listener(), "{changed:?}");
    assert_eq!(secrets(&live).keys().collect::<Vec<_>>(), [SDS_NAME]);
    let served = chain_pem(&secrets(&live)[SDS_NAME]);
    assert!(String::from_utf8(served).unwrap().starts_with("-----BEGIN CERTIFICATE-----\n"));
    live.assert_matches_full();

    // A grant for another namespace's Gateways permits nothing here.
    live.apply(grant("someone-else", "certs"));
    assert!(secrets(&live).is_empty());
    live.assert_matches_full();
    live.apply(grant("team", "certs"));
    assert_eq!(secrets(&live).len(), 1);

    let changed = live.delete(&ObjectKey::new(Kind::ReferenceGrant, "certs", "certs"));
    // The HTTPS listener is served, or left out, with its certificate.
    assert_eq!(changed, with_listener(), "{changed:?}");
    assert!(secrets(&live).is_empty(), "refused again");
    live.assert_matches_full();
}

#[test]
fn rotating_a_certificate_sends_only_its_secret() {
    let mut live = Harness::new(vec![gateway("certs", "cert"), tls_secret("certs", "cert", 0)]);
    let before = chain_pem(&secrets(&live)[SDS_NAME]);
    let listeners = live.store.load().resources(TypeUrl::Listener).clone();

    let changed = live.apply(tls_secret("certs", "cert", 1));
    assert_eq!(changed, [(TypeUrl::Secret, SDS_NAME.to_string())], "the listener is untouched");
    assert_ne!(chain_pem(&secrets(&live)[SDS_NAME]), before);
    assert_eq!(live.store.load().resources(TypeUrl::Listener), &listeners);
    live.assert_matches_full();

    // A key that does not match its certificate: the Secret is no longer served.
    let (crt, _) = &PAIRS[0];
    let (_, key) = &PAIRS[1];
    let changed = live.apply(parse(&tls_secret_yaml("certs", "cert", crt, key)));
    // The HTTPS listener is served, or left out, with its certificate.
    assert_eq!(changed, with_listener(), "{changed:?}");
    assert!(secrets(&live).is_empty());
    live.assert_matches_full();

    live.apply(tls_secret("certs", "cert", 0));
    assert_eq!(chain_pem(&secrets(&live)[SDS_NAME]), before);
    let changed = live.delete(&ObjectKey::new(Kind::Gateway, "certs", "gw"));
    assert!(changed.contains(&(TypeUrl::Secret, SDS_NAME.to_string())), "{changed:?}");
    assert!(secrets(&live).is_empty(), "no Gateway serves it");
    live.assert_matches_full();
}

#[test]
fn secrets_nobody_serves_and_opaque_secrets_are_never_sent() {
    let opaque = parse(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: cert, namespace: certs}\nstringData: {apiKey: sk-1}\n",
    );
    let live =
        Harness::new(vec![tls_secret("certs", "unused", 0), gateway("certs", "cert"), opaque]);
    assert!(secrets(&live).is_empty());
}

/// The emitted Secret as Envoy would hold it from SDS: a static secret named by a TLS
/// listener's `tls_certificate_sds_secret_configs`.
fn tls_bootstrap(secret: Secret) -> Bootstrap {
    let tls = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![SdsSecretConfig {
                name: secret.name.clone(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: "tls".into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            RouteConfiguration::default(),
        )),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(Router::default()))),
            ..Default::default()
        }],
        ..Default::default()
    };
    let listener = Listener {
        name: "tls".into(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "127.0.0.1".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                    free_port(),
                ))),
                ..Default::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.tls".into(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(tls))),
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    Bootstrap {
        static_resources: Some(StaticResources {
            listeners: vec![listener],
            secrets: vec![secret],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn envoy_validate(bootstrap: &Bootstrap) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bootstrap.pb");
    std::fs::write(&path, bootstrap.encode_to_vec()).unwrap();
    let out = Command::new(envoy_bin())
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(&path)
        .output()
        .expect("envoy runs");
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

#[test]
fn envoy_loads_the_certificate_it_is_served() {
    let live = Harness::new(vec![gateway("certs", "cert"), tls_secret("certs", "cert", 1)]);
    let snapshot = live.store.load();
    let resource = snapshot.get(TypeUrl::Secret, SDS_NAME).expect("served");
    let served = Secret::decode(resource.body.value.as_slice()).unwrap();
    envoy_validate(&tls_bootstrap(served.clone())).unwrap();

    // The check bites: the same certificate with the other key is refused by Envoy.
    let mut mismatched = certificate(&served);
    let (_, key) = &PAIRS[0];
    mismatched.private_key = Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(key.clone().into_bytes())),
        ..Default::default()
    });
    let bad = Secret { r#type: Some(secret::Type::TlsCertificate(mismatched)), ..served };
    assert!(envoy_validate(&tls_bootstrap(bad)).is_err(), "Envoy checks the key");
}

#[test]
fn compiled_updates_never_debug_print_a_key() {
    let live = Harness::new(vec![gateway("certs", "cert"), tls_secret("certs", "cert", 1)]);
    let updates: Vec<Update> = Compiler::new(CompileOptions::default()).full(&live.graph);
    let printed = format!("{updates:?}");
    let (_, key) = &PAIRS[1];
    let lines: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!lines.is_empty());
    for line in lines {
        assert!(!printed.contains(line), "{printed}");
    }
    assert!(printed.contains(SDS_NAME));
}

/// A listener on `port` terminating TLS with the certificate `sds_name`, fetched over ADS, and
/// answering every request with 200 `tls ok`.
fn sds_listener(port: u16, sds_name: &str) -> Listener {
    let tls = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![SdsSecretConfig {
                name: sds_name.into(),
                sds_config: Some(ConfigSource {
                    resource_api_version: ApiVersion::V3 as i32,
                    config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                        AggregatedConfigSource {},
                    )),
                    ..Default::default()
                }),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut listener =
        tls_bootstrap(Secret::default()).static_resources.unwrap().listeners.remove(0);
    listener.name = "sds-probe".into();
    listener.address = Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    });
    let chain = &mut listener.filter_chains[0];
    chain.transport_socket = Some(TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(tls))),
    });
    let Some(filter::ConfigType::TypedConfig(any)) = &chain.filters[0].config_type else {
        unreachable!()
    };
    let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    hcm.route_specifier =
        Some(http_connection_manager::RouteSpecifier::RouteConfig(RouteConfiguration {
            virtual_hosts: vec![VirtualHost {
                name: "all".into(),
                domains: vec!["*".into()],
                routes: vec![Route {
                    r#match: Some(RouteMatch {
                        path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                        ..Default::default()
                    }),
                    action: Some(route::Action::DirectResponse(DirectResponseAction {
                        status: 200,
                        body: Some(DataSource {
                            specifier: Some(data_source::Specifier::InlineString("tls ok".into())),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }));
    chain.filters[0].config_type = Some(filter::ConfigType::TypedConfig(pack_any(hcm)));
    listener
}

/// The subject of the certificate the TLS server on `port` presents, if a handshake succeeds.
fn presented_subject(port: u16) -> Option<String> {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "gw.test"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    let subject = text.lines().find_map(|l| l.strip_prefix("subject="))?;
    Some(subject.replace(' ', ""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_fetches_the_certificate_over_ads_and_serves_the_rotated_one() {
    let mut live = Harness::new(vec![gateway("certs", "cert"), tls_secret("certs", "cert", 1)]);
    // Only the Secrets aixds compiled, and a TLS listener naming one, as HTTPS listeners will.
    let store = Arc::new(SnapshotStore::new());
    let port = free_port();
    let probe = sds_listener(port, SDS_NAME);
    let secrets = |live: &Harness| -> Vec<Update> {
        let snapshot = live.store.load();
        let resources = snapshot.resources(TypeUrl::Secret).values();
        resources
            .map(|r| Update {
                type_url: TypeUrl::Secret,
                name: r.name.clone(),
                resource: Some((**r).clone()),
            })
            .collect()
    };
    let mut updates = secrets(&live);
    assert_eq!(updates.len(), 1);
    updates.push(Update {
        type_url: TypeUrl::Listener,
        name: probe.name.clone(),
        resource: Some(Resource::new(probe.name.clone(), &probe, vec![])),
    });
    store.publish(updates);

    let server = AdsServer::new(Arc::clone(&store));
    let ads = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let xds_address = ads.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server.into_service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(ads)),
    );
    let _envoy = start_envoy(&BootstrapOptions {
        xds_address,
        admin_port: free_port(),
        ..Default::default()
    });
    let subject = eventually(20, "Envoy serves TLS with the certificate from SDS", || async {
        presented_subject(port)
    })
    .await;
    assert_eq!(subject, "CN=server");

    // Rotation: the new Secret alone is published; the listener is not touched.
    let changed = live.apply(tls_secret("certs", "cert", 0));
    assert_eq!(changed, [(TypeUrl::Secret, SDS_NAME.to_string())]);
    store.publish(secrets(&live));
    eventually(20, "Envoy serves the rotated certificate", || async {
        (presented_subject(port)? == "CN=aixdstestCA").then_some(())
    })
    .await;
}

/// `aixds run` with its own Envoy: an HTTPS listener whose certificate aixds serves over SDS
/// answers a client that trusts the CA, and editing the Secret in its file makes Envoy present
/// the new certificate while the Listener stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_listener_serves_its_certificate_and_then_the_rotated_one() {
    let upstream = Upstream::start("A").await;
    let port = free_port();
    let (ca, _) = &PAIRS[0];
    let trust = tempfile::tempdir().unwrap();
    let ca_file = trust.path().join("ca.crt");
    std::fs::write(&ca_file, ca).unwrap();
    let gateway = crate::envoy::manifests(port, &[("model-a", vec![("a", upstream.addr, 1)])])
        .replacen(
            &format!("{{name: http, protocol: HTTP, port: {port}}}"),
            &format!(
                "{{name: https, protocol: HTTPS, port: {port}, tls: {{certificateRefs: [{{name: cert}}]}}}}"
            ),
            1,
        );
    assert!(gateway.contains("protocol: HTTPS"));
    let with_pair = |pair: usize| {
        let (crt, key) = &PAIRS[pair];
        format!("{gateway}---\n{}", tls_secret_yaml("default", "cert", crt, key))
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    write_atomic(&file, with_pair(1));
    let mut gw = crate::envoy::start_gateway(dir.path(), port, false, "https").await;

    let https_chat = || {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-D", "-", "--cacert"])
            .arg(&ca_file)
            .arg(format!("https://127.0.0.1:{port}/v1/chat/completions"))
            .args(["-H", "content-type: application/json"])
            .args(["-d", r#"{"model":"model-a","messages":[{"role":"user","content":"hi"}]}"#])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).to_lowercase()
    };
    let headers = eventually(30, "a verified TLS request reaches upstream A", || async {
        let headers = https_chat();
        headers.contains("x-upstream-id: a").then_some(headers)
    })
    .await;
    let status = headers.lines().next().and_then(|l| l.split(' ').nth(1));
    assert_eq!(status, Some("200"), "{headers}");
    assert_eq!(presented_subject(port).as_deref(), Some("CN=server"));
    let listener = |gw: &crate::envoy::Gateway| {
        let snapshot = gw.running.store.load();
        snapshot.get(TypeUrl::Listener, &format!("listener-{port}")).map(|l| l.version.clone())
    };
    let before = listener(&gw).expect("the HTTPS listener is served");

    crate::envoy::edit(&mut gw, &file, &with_pair(0)).await;
    eventually(30, "Envoy presents the rotated certificate", || async {
        (presented_subject(port)? == "CN=aixdstestCA").then_some(())
    })
    .await;
    assert_eq!(listener(&gw), Some(before), "the Listener names the Secret, it does not hold it");
    gw.running.shutdown().await;
}
