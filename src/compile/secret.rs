//! TLS certificates for HTTPS listeners, served to Envoy over SDS on the ADS stream.
//!
//! Takes: a `kubernetes.io/tls` Secret that a served listener names (`graph::listeners` judged
//! it with [`crate::api::tls_certificate`]). Gives: an Envoy `Secret` named [`sds_name`]
//! holding the certificate chain and private key inline. A listener names its certificates
//! through `tls_certificate_sds_secret_configs` with an ADS config source (`listener.rs`), so a
//! private key never appears inside a Listener, and rotating a Secret sends Envoy that one
//! resource: the listener's bytes stay the same and its connections are not drained.
//!
//! What Envoy gets is what was checked, encoded again: only the certificates of `tls.crt` (a
//! key pasted into it never reaches `certificate_chain`, which Envoy's admin config dump shows)
//! and the one key of `tls.key`. Errors name the Secret and what is wrong, never its bytes.

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    Secret, TlsCertificate, secret,
};
use rustls::pki_types::PrivateKeyDer;

use crate::api::{Object, ObjectKey, Spec, tls_certificate};
use crate::xds::Resource;

/// The SDS name of the certificate in the Secret `key`.
pub(super) fn sds_name(key: &ObjectKey) -> String {
    format!("secret/{}", key.path())
}

/// The Envoy Secret of the `kubernetes.io/tls` Secret `key`, or why it holds no usable
/// certificate and key. The message never quotes the Secret's bytes.
pub(super) fn tls_secret(key: &ObjectKey, object: &Object) -> Result<Resource, String> {
    let what = format!("{} {}/{}", key.kind, key.namespace, key.name);
    let Spec::Secret(data) = &object.spec else { return Err(format!("{what} is not a Secret")) };
    let checked = tls_certificate(data).map_err(|problem| format!("{what} {problem}"))?;
    let mut chain_pem = Vec::new();
    for cert in &checked.chain {
        chain_pem.extend(pem("CERTIFICATE", cert));
    }
    let key_label = match &checked.key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    let name = sds_name(key);
    let secret = Secret {
        name: name.clone(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(chain_pem)),
            private_key: Some(inline(pem(key_label, checked.key.secret_der()))),
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

    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    use super::*;
    use crate::api::{
        ParseOutcome, TLS_CERT_KEY, TLS_KEY_KEY, TLS_SECRET_TYPE, parse_document,
        tls_certificate_problem,
    };

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
        let data: serde_json::Map<String, serde_json::Value> =
            data.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
        let doc = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "default"},
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
                r#"has no PEM certificate under "tls.crt""#,
            ),
            (
                secret_object(
                    "cert",
                    TLS_SECRET_TYPE,
                    &[(TLS_CERT_KEY, garbage), (TLS_KEY_KEY, &key)],
                ),
                r#"has a certificate 1 under "tls.crt" that is not X.509 v3"#,
            ),
            (
                secret_object(
                    "cert",
                    TLS_SECRET_TYPE,
                    &[(TLS_CERT_KEY, &crt), (TLS_KEY_KEY, &crt)],
                ),
                r#"has no PEM private key (PKCS#8, PKCS#1 or SEC1) under "tls.key""#,
            ),
            (
                secret_object(
                    "cert",
                    TLS_SECRET_TYPE,
                    &[(TLS_CERT_KEY, &crt), (TLS_KEY_KEY, &other)],
                ),
                r#"has a key under "tls.key" that does not match its first certificate"#,
            ),
        ];
        for (object, want) in cases {
            let err = tls_secret(&object.key, &object).unwrap_err();
            assert!(err.starts_with("Secret default/cert ") && err.contains(want), "{err}");
            let Spec::Secret(data) = &object.spec else { unreachable!() };
            assert_eq!(
                tls_certificate_problem(data).as_deref(),
                err.strip_prefix("Secret default/cert ")
            );
            for line in key_lines(&key).into_iter().chain(key_lines(&other)) {
                assert!(!err.contains(line), "{err}");
            }
        }
    }
}
