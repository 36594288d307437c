//! TLS certificates for HTTPS listeners, served to Envoy over SDS on the ADS stream.
//!
//! Takes: a Gateway listener's `tls.certificateRefs` and the `kubernetes.io/tls` Secrets they
//! name. Gives: per listener, the Secrets it serves or why it cannot (for the listener's
//! conditions); per usable Secret, an Envoy `Secret` named [`sds_name`] holding the certificate
//! chain and private key inline. A listener names its certificates through
//! `tls_certificate_sds_secret_configs` with an ADS config source, so a private key never
//! appears inside a Listener, and rotating a Secret sends Envoy that one resource: the
//! listener's bytes stay the same and its connections are not drained.
//!
//! A Secret is usable when `tls.crt` holds PEM X.509 v3 certificates, `tls.key` a PEM private key
//! (PKCS#8, PKCS#1 or SEC1; RSA, ECDSA P-256/P-384 or Ed25519) and the key matches the first
//! certificate. What Envoy gets is what was checked, encoded again: only the certificates of
//! `tls.crt` (a key pasted into it never reaches `certificate_chain`, which Envoy's admin
//! config dump shows) and the one key of `tls.key`. Errors name the Secret and the key at
//! fault, never their bytes.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    Secret, TlsCertificate, secret,
};
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;

use crate::api::{Kind, Listener, Object, ObjectKey, Spec, TLS_SECRET_TYPE, TlsMode};
use crate::graph::{Graph, Reason};
use crate::xds::Resource;

/// The certificate chain's key in a `kubernetes.io/tls` Secret.
pub const TLS_CERT_KEY: &str = "tls.crt";
/// The private key's key in a `kubernetes.io/tls` Secret.
pub const TLS_KEY_KEY: &str = "tls.key";

/// The SDS resource name of a Secret's certificate.
pub(super) fn sds_name(secret: &ObjectKey) -> String {
    format!("secret/{}", secret.path())
}

/// The Secrets `listener` of `gateway` serves, in the order its `tls.certificateRefs` name
/// them, or why they are not usable: `InvalidCertificateRef` for a ref to anything but a core
/// Secret, to a Secret that is missing or holds no usable certificate and key, and for a
/// terminating listener with no ref; `RefNotPermitted` for a Secret in another namespace that
/// no ReferenceGrant there permits (checked first, so that it says nothing of that Secret). A
/// listener without `tls`, or passing TLS through, serves none.
pub(super) fn listener_certificates(
    graph: &Graph,
    gateway: &ObjectKey,
    listener: &Listener,
) -> Result<Vec<ObjectKey>, (Reason, String)> {
    let Some(tls) = listener.tls.as_ref().filter(|tls| tls.mode == TlsMode::Terminate) else {
        return Ok(Vec::new());
    };
    if tls.certificate_refs.is_empty() {
        return Err((
            Reason::InvalidCertificateRef,
            "tls.certificateRefs is empty: a listener that terminates TLS needs a certificate"
                .into(),
        ));
    }
    let mut secrets = Vec::new();
    let mut problems: Vec<(Reason, String)> = Vec::new();
    for (i, r) in tls.certificate_refs.iter().enumerate() {
        let field = format!("tls.certificateRefs[{i}]");
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("Secret");
        if (group, kind) != ("", "Secret") {
            problems.push((
                Reason::InvalidCertificateRef,
                format!("{field}: {kind}.{group} {:?} is not a core Secret", r.name),
            ));
            continue;
        }
        let namespace = r.namespace.as_deref().unwrap_or(&gateway.namespace);
        let key = ObjectKey::new(Kind::Secret, namespace, &r.name);
        if !graph.reference_permitted(gateway, &key) {
            problems.push((
                Reason::RefNotPermitted,
                format!(
                    "{field}: Secret {namespace}/{} is in another namespace and no \
                     ReferenceGrant in {namespace} lets Gateways of {} reference it",
                    r.name, gateway.namespace
                ),
            ));
            continue;
        }
        let checked = match graph.object(&key) {
            None => Err(format!("Secret {namespace}/{} not found", r.name)),
            Some(object) => tls_secret(&key, object).map(|_| ()),
        };
        match checked {
            Ok(()) if !secrets.contains(&key) => secrets.push(key),
            Ok(()) => {}
            Err(message) => {
                problems.push((Reason::InvalidCertificateRef, format!("{field}: {message}")))
            }
        }
    }
    match problems.first() {
        None => Ok(secrets),
        Some((reason, _)) => {
            let message: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
            Err((*reason, message.join("; ")))
        }
    }
}

/// The Secrets that the listeners of the Gateway `key` serve, if it is accepted; a listener
/// whose certificates are not usable contributes none.
pub(super) fn gateway_certificates(graph: &Graph, key: &ObjectKey) -> BTreeSet<ObjectKey> {
    let Some(Spec::Gateway(spec)) = graph.object(key).map(|o| &o.spec) else {
        return BTreeSet::new();
    };
    if !graph.node(key).is_some_and(|n| n.accepted()) {
        return BTreeSet::new();
    }
    spec.listeners
        .iter()
        .filter_map(|l| listener_certificates(graph, key, l).ok())
        .flatten()
        .collect()
}

/// The Envoy Secret of the `kubernetes.io/tls` Secret `key`, or why it holds no usable
/// certificate and key. The message never quotes the Secret's bytes.
pub(super) fn tls_secret(key: &ObjectKey, object: &Object) -> Result<Resource, String> {
    let what = format!("Secret {}/{}", key.namespace, key.name);
    let Spec::Secret(data) = &object.spec else {
        return Err(format!("{} {}/{} is not a Secret", key.kind, key.namespace, key.name));
    };
    if data.type_ != TLS_SECRET_TYPE {
        return Err(format!("{what} is of type {:?}, not {TLS_SECRET_TYPE}", data.type_));
    }
    let value =
        |name: &str| data.values.get(name).ok_or_else(|| format!("{what} has no {name:?} key"));
    let (cert_pem, key_pem) = (value(TLS_CERT_KEY)?, value(TLS_KEY_KEY)?);

    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{what}: {TLS_CERT_KEY} is not valid PEM"))?;
    if chain.is_empty() {
        return Err(format!("{what}: {TLS_CERT_KEY} holds no PEM certificate"));
    }
    for (i, cert) in chain.iter().enumerate() {
        ParsedCertificate::try_from(cert).map_err(|e| {
            format!(
                "{what}: certificate {} of {TLS_CERT_KEY} is not an X.509 v3 certificate ({e})",
                i + 1
            )
        })?;
    }
    let private_key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| {
        format!("{what}: {TLS_KEY_KEY} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")
    })?;
    let signing_key = any_supported_type(&private_key).map_err(|_| {
        format!(
            "{what}: {TLS_KEY_KEY} is not a usable private key (RSA of 2048 bits or more, ECDSA \
             P-256 or P-384, or Ed25519)"
        )
    })?;
    CertifiedKey::new(chain.clone(), signing_key).keys_match().map_err(|_| {
        format!("{what}: the key in {TLS_KEY_KEY} does not match the first certificate of {TLS_CERT_KEY}")
    })?;

    let mut chain_pem = Vec::new();
    for cert in &chain {
        chain_pem.extend(pem("CERTIFICATE", cert));
    }
    let key_label = match &private_key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    let name = sds_name(key);
    let secret = Secret {
        name: name.clone(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(chain_pem)),
            private_key: Some(inline(pem(key_label, private_key.secret_der()))),
            ..Default::default()
        })),
    };
    Ok(Resource::new(name, &secret, vec![key.clone()]))
}

fn inline(bytes: Vec<u8>) -> DataSource {
    DataSource { specifier: Some(data_source::Specifier::InlineBytes(bytes)), ..Default::default() }
}

/// One PEM block: `der` in base64, 64 characters a line, between `label`'s markers.
fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut base64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            let c = if i <= chunk.len() { ALPHABET[(n >> shift) as usize & 63] } else { b'=' };
            base64.push(c);
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n").into_bytes();
    for line in base64.chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend(format!("-----END {label}-----\n").into_bytes());
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use prost::Message;

    use super::*;
    use crate::api::{ParseOutcome, parse_document};

    /// Runs openssl in `dir` (certificates are made at test time, never committed).
    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Test material, by file name: a CA, a leaf it signs (`leaf.crt`, EC key `leaf.key` in
    /// PKCS#8), self-signed certificates with an RSA PKCS#1 key (`rsa.*`) and an EC SEC1 key
    /// (`sec1.*`), and a key that matches nothing (`other.key`).
    struct Material(tempfile::TempDir);

    impl Material {
        fn new() -> Material {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
            let self_signed = |key_args: &[&str], name: &str| {
                let mut args = vec!["req", "-x509"];
                args.extend(key_args);
                let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
                args.extend(["-keyout", &key, "-out", &crt, "-days", "1", "-subj", "/CN=t"]);
                openssl(d, &args);
            };
            self_signed(&ec, "ca");
            let mut req = vec!["req"];
            req.extend(ec);
            req.extend(["-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=leaf"]);
            openssl(d, &req);
            std::fs::write(d.join("leaf.ext"), "subjectAltName=DNS:leaf\n").unwrap();
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-extfile",
                    "leaf.ext",
                    "-in",
                    "leaf.csr",
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "1",
                    "-out",
                    "leaf.crt",
                ],
            );
            openssl(d, &["genrsa", "-traditional", "-out", "rsa.key", "2048"]);
            openssl(
                d,
                &[
                    "req", "-x509", "-key", "rsa.key", "-out", "rsa.crt", "-days", "1", "-subj",
                    "/CN=t",
                ],
            );
            openssl(
                d,
                &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sec1.key"],
            );
            openssl(
                d,
                &[
                    "req", "-x509", "-key", "sec1.key", "-out", "sec1.crt", "-days", "1", "-subj",
                    "/CN=t",
                ],
            );
            openssl(
                d,
                &[
                    "genpkey",
                    "-algorithm",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-out",
                    "other.key",
                ],
            );
            Material(dir)
        }

        fn read(&self, file: &str) -> String {
            std::fs::read_to_string(self.0.path().join(file)).unwrap()
        }
    }

    fn secret_object(name: &str, type_: &str, data: &[(&str, &str)]) -> Object {
        secret_in("default", name, type_, data)
    }

    fn secret_in(namespace: &str, name: &str, type_: &str, data: &[(&str, &str)]) -> Object {
        let data: serde_json::Map<String, serde_json::Value> =
            data.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
        let doc = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": type_, "stringData": data,
        });
        match parse_document(&doc.to_string()).unwrap() {
            ParseOutcome::Object(o) => *o,
            other => panic!("{other:?}"),
        }
    }

    fn tls(m: &Material, crt: &str, key: &str) -> Object {
        secret_object(
            "cert",
            TLS_SECRET_TYPE,
            &[(TLS_CERT_KEY, &m.read(crt)), (TLS_KEY_KEY, &m.read(key))],
        )
    }

    fn compiled(object: &Object) -> Result<TlsCertificate, String> {
        let resource = tls_secret(&object.key, object)?;
        assert_eq!(resource.name, "secret/default/cert");
        assert_eq!(resource.sources, std::slice::from_ref(&object.key));
        let decoded = Secret::decode(resource.body.value.as_slice()).unwrap();
        assert_eq!(decoded.name, resource.name);
        match decoded.r#type {
            Some(secret::Type::TlsCertificate(cert)) => Ok(cert),
            other => panic!("{other:?}"),
        }
    }

    fn inline_bytes(source: Option<DataSource>) -> Vec<u8> {
        match source.and_then(|s| s.specifier) {
            Some(data_source::Specifier::InlineBytes(bytes)) => bytes,
            other => panic!("{other:?}"),
        }
    }

    fn ders(pem: &[u8]) -> Vec<Vec<u8>> {
        CertificateDer::pem_slice_iter(pem).map(|c| c.unwrap().to_vec()).collect()
    }

    /// The base64 lines of a PEM key: none of them may appear in a message.
    fn key_lines(pem: &str) -> Vec<&str> {
        pem.lines().filter(|l| !l.starts_with("-----") && l.len() > 8).collect()
    }

    #[test]
    fn a_certificate_and_its_key_in_every_encoding_are_served_as_checked() {
        let m = Material::new();
        for (crt, key, label) in [
            ("leaf.crt", "leaf.key", "PRIVATE KEY"),
            ("rsa.crt", "rsa.key", "RSA PRIVATE KEY"),
            ("sec1.crt", "sec1.key", "EC PRIVATE KEY"),
        ] {
            let cert = compiled(&tls(&m, crt, key)).unwrap_or_else(|e| panic!("{crt}: {e}"));
            let chain = inline_bytes(cert.certificate_chain);
            assert_eq!(ders(&chain), ders(m.read(crt).as_bytes()), "{crt}");
            let served = inline_bytes(cert.private_key);
            let want = PrivateKeyDer::from_pem_slice(m.read(key).as_bytes()).unwrap();
            let got = PrivateKeyDer::from_pem_slice(&served).unwrap();
            assert_eq!(got.secret_der(), want.secret_der(), "{key}");
            let served = String::from_utf8(served).unwrap();
            assert!(served.starts_with(&format!("-----BEGIN {label}-----\n")), "{served}");
            assert!(served.lines().all(|l| l.len() <= 64));
        }
    }

    #[test]
    fn a_chain_is_served_whole_and_only_its_certificates() {
        let m = Material::new();
        let chain = m.read("leaf.crt") + &m.read("ca.crt");
        // A key pasted into tls.crt must not reach certificate_chain, which Envoy's admin shows.
        let pasted = chain.clone() + &m.read("other.key");
        let object = secret_object(
            "cert",
            TLS_SECRET_TYPE,
            &[(TLS_CERT_KEY, &pasted), (TLS_KEY_KEY, &m.read("leaf.key"))],
        );
        let served = inline_bytes(compiled(&object).unwrap().certificate_chain);
        assert_eq!(ders(&served).len(), 2);
        assert_eq!(ders(&served), ders(chain.as_bytes()));
        assert!(!String::from_utf8(served).unwrap().contains("PRIVATE KEY"));
    }

    #[test]
    fn unusable_secrets_are_refused_saying_why_without_their_bytes() {
        let m = Material::new();
        let (crt, key, other) = (m.read("leaf.crt"), m.read("leaf.key"), m.read("other.key"));
        let garbage =
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
        let cases: Vec<(Object, &str)> = vec![
            (
                secret_object("cert", "Opaque", &[(TLS_CERT_KEY, &crt), (TLS_KEY_KEY, &key)]),
                r#"is of type "Opaque", not kubernetes.io/tls"#,
            ),
            (
                secret_object("cert", TLS_SECRET_TYPE, &[(TLS_CERT_KEY, &crt)]),
                r#"has no "tls.key" key"#,
            ),
            (
                secret_object("cert", TLS_SECRET_TYPE, &[(TLS_KEY_KEY, &key)]),
                r#"has no "tls.crt" key"#,
            ),
            (
                secret_object(
                    "cert",
                    TLS_SECRET_TYPE,
                    &[(TLS_CERT_KEY, "no pem"), (TLS_KEY_KEY, &key)],
                ),
                "tls.crt holds no PEM certificate",
            ),
            (
                secret_object(
                    "cert",
                    TLS_SECRET_TYPE,
                    &[(TLS_CERT_KEY, garbage), (TLS_KEY_KEY, &key)],
                ),
                "certificate 1 of tls.crt is not an X.509 v3 certificate",
            ),
            (
                secret_object(
                    "cert",
                    TLS_SECRET_TYPE,
                    &[(TLS_CERT_KEY, &crt), (TLS_KEY_KEY, &crt)],
                ),
                "tls.key holds no PEM private key",
            ),
            (
                secret_object(
                    "cert",
                    TLS_SECRET_TYPE,
                    &[(TLS_CERT_KEY, &crt), (TLS_KEY_KEY, &other)],
                ),
                "the key in tls.key does not match the first certificate of tls.crt",
            ),
        ];
        for (object, want) in cases {
            let err = tls_secret(&object.key, &object).unwrap_err();
            assert!(err.starts_with("Secret default/cert") && err.contains(want), "{err}");
            for line in key_lines(&key).into_iter().chain(key_lines(&other)) {
                assert!(!err.contains(line), "{err}");
            }
        }
    }

    fn parse(doc: &str) -> Object {
        match parse_document(doc).unwrap() {
            ParseOutcome::Object(o) => *o,
            other => panic!("{other:?}"),
        }
    }

    const GATEWAY: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: aixds
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: own, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}, {name: cert, kind: Secret, group: ''}]}}
  - {name: kind, port: 444, protocol: HTTPS, tls: {certificateRefs: [{name: cert, kind: ConfigMap}]}}
  - {name: missing, port: 445, protocol: HTTPS, tls: {certificateRefs: [{name: gone}]}}
  - {name: elsewhere, port: 446, protocol: HTTPS, tls: {certificateRefs: [{name: cert, namespace: other}]}}
  - {name: none, port: 447, protocol: HTTPS, tls: {mode: Terminate}}
  - {name: through, port: 448, protocol: HTTPS, tls: {mode: Passthrough, certificateRefs: [{name: gone}]}}
  - {name: mixed, port: 449, protocol: HTTPS, tls: {certificateRefs: [{name: cert}, {name: gone}]}}
";

    fn grant(name: Option<&str>) -> Object {
        let to = match name {
            Some(name) => format!("{{group: '', kind: Secret, name: {name}}}"),
            None => "{group: '', kind: Secret}".into(),
        };
        parse(&format!(
            "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
             metadata: {{name: g, namespace: other}}\n\
             spec: {{from: [{{group: gateway.networking.k8s.io, kind: Gateway, namespace: default}}], \
             to: [{to}]}}"
        ))
    }

    #[test]
    fn listener_certificates_name_the_secrets_or_say_why_not() {
        let m = Material::new();
        let (crt, key) = (m.read("leaf.crt"), m.read("leaf.key"));
        let data = [(TLS_CERT_KEY, crt.as_str()), (TLS_KEY_KEY, key.as_str())];
        let mut graph = Graph::new();
        let gateway = parse(GATEWAY);
        let gw = gateway.key.clone();
        graph.apply(gateway);
        graph.apply(secret_in("default", "cert", TLS_SECRET_TYPE, &data));
        graph.apply(secret_in("other", "cert", TLS_SECRET_TYPE, &data));
        let Some(Spec::Gateway(spec)) = graph.object(&gw).map(|o| o.spec.clone()) else {
            unreachable!()
        };
        let check = |graph: &Graph, name: &str| {
            let listener = spec.listeners.iter().find(|l| l.name == name).unwrap();
            listener_certificates(graph, &gw, listener)
        };
        let own = ObjectKey::new(Kind::Secret, "default", "cert");
        assert_eq!(check(&graph, "http"), Ok(vec![]));
        assert_eq!(check(&graph, "own"), Ok(vec![own.clone()]), "named twice, served once");
        assert_eq!(check(&graph, "through"), Ok(vec![]), "passthrough holds no certificate");
        let refused = |graph: &Graph, name: &str, reason: Reason, want: &str| {
            let (got, message) = check(graph, name).unwrap_err();
            assert_eq!(got, reason, "{name}: {message}");
            assert!(message.contains(want), "{name}: {message}");
        };
        let invalid = Reason::InvalidCertificateRef;
        refused(
            &graph,
            "kind",
            invalid,
            r#"certificateRefs[0]: ConfigMap. "cert" is not a core Secret"#,
        );
        refused(
            &graph,
            "missing",
            invalid,
            "tls.certificateRefs[0]: Secret default/gone not found",
        );
        refused(&graph, "none", invalid, "tls.certificateRefs is empty");
        refused(&graph, "mixed", invalid, "tls.certificateRefs[1]: Secret default/gone not found");
        let not_permitted = "Secret other/cert is in another namespace and no ReferenceGrant";
        refused(&graph, "elsewhere", Reason::RefNotPermitted, not_permitted);

        graph.apply(grant(Some("another")));
        refused(&graph, "elsewhere", Reason::RefNotPermitted, not_permitted);
        graph.apply(grant(Some("cert")));
        let theirs = ObjectKey::new(Kind::Secret, "other", "cert");
        assert_eq!(check(&graph, "elsewhere"), Ok(vec![theirs.clone()]));
        graph.apply(grant(None));
        assert_eq!(check(&graph, "elsewhere"), Ok(vec![theirs.clone()]), "every Secret there");

        let expected: BTreeSet<ObjectKey> = [own.clone(), theirs].into();
        assert_eq!(gateway_certificates(&graph, &gw), expected);
        graph.delete(&ObjectKey::new(Kind::ReferenceGrant, "other", "g"));
        refused(&graph, "elsewhere", Reason::RefNotPermitted, not_permitted);
        assert_eq!(gateway_certificates(&graph, &gw), [own].into());

        // A Secret that stops being usable makes its listeners refuse it.
        graph.apply(secret_in("default", "cert", "Opaque", &data));
        refused(&graph, "own", invalid, "is of type \"Opaque\"");
        assert!(gateway_certificates(&graph, &gw).is_empty());
    }
}
