//! The cloud credentials a BackendSecurityPolicy's Secret holds, read and checked: an AWS
//! shared-credentials file, a GCP service account key, an Entra ID client secret.
//!
//! Takes: a Secret's data. Gives: the credential, or why there is none in a message that names
//! the Secret key, profile or field at fault and never quotes a value. Pure: nothing here talks
//! to a provider (see `extproc::credentials` for that).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use ring::signature::RsaKeyPair;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

use super::SecretData;

/// The Secret key of an AWS shared-credentials file.
pub const AWS_CREDENTIALS_KEY: &str = "credentials";
/// The Secret key of a GCP service account key file.
pub const GCP_SERVICE_ACCOUNT_KEY: &str = "service_account.json";
/// The Secret key of an Entra ID application's client secret.
pub const AZURE_CLIENT_SECRET_KEY: &str = "client-secret";
/// Where a service account key that names no `token_uri` gets its tokens.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// Static AWS keys. `Debug` shows the access key id only (it is an identifier, sent in every
/// request's `Authorization`), never the secret key or session token.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for AwsKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKeys")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The keys of `profile` in the shared-credentials file under [`AWS_CREDENTIALS_KEY`].
pub fn aws_keys(secret: &SecretData, profile: &str) -> Result<AwsKeys, String> {
    let text = text(secret, AWS_CREDENTIALS_KEY)?;
    let sections = ini_sections(text).map_err(|why| format!("{AWS_CREDENTIALS_KEY:?} {why}"))?;
    let section = sections
        .get(profile)
        .ok_or_else(|| format!("{AWS_CREDENTIALS_KEY:?} has no profile [{profile}]"))?;
    let field = |name: &str| -> Result<Option<String>, String> {
        let Some(value) = section.get(name) else { return Ok(None) };
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{AWS_CREDENTIALS_KEY:?} profile [{profile}] has a {name} that is empty or holds \
                 characters other than printable ASCII"
            ));
        }
        Ok(Some(value.clone()))
    };
    let required = |name: &str| {
        field(name)?
            .ok_or_else(|| format!("{AWS_CREDENTIALS_KEY:?} profile [{profile}] has no {name}"))
    };
    Ok(AwsKeys {
        access_key_id: required("aws_access_key_id")?,
        secret_access_key: required("aws_secret_access_key")?,
        session_token: field("aws_session_token")?,
    })
}

/// The sections of an INI file as the AWS CLI and SDKs read credentials files: `[name]` headers,
/// `key = value` lines (keys lowercased, values trimmed), `#` and `;` comment lines, indented
/// lines continuing a nested setting (ignored: credentials are never nested). A later value wins.
fn ini_sections(text: &str) -> Result<BTreeMap<&str, BTreeMap<String, String>>, String> {
    let mut sections: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<&str> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if raw.starts_with([' ', '\t']) && current.is_some() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            let name = name
                .strip_suffix(']')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| format!("line {} is not a [profile] header", i + 1))?;
            sections.entry(name).or_default();
            current = Some(name);
            continue;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| {
            format!("line {} is not a [profile], a comment or key = value", i + 1)
        })?;
        let section =
            current.ok_or_else(|| format!("line {} sets a key before any [profile]", i + 1))?;
        sections
            .entry(section)
            .or_default()
            .insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    Ok(sections)
}

/// A service account key: who signs the token requests, with which key, and where they go.
#[derive(Clone)]
pub struct ServiceAccountKey {
    pub client_email: String,
    pub private_key_id: Option<String>,
    pub token_uri: String,
    pub key: Arc<RsaKeyPair>,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .field("key", &"<redacted>")
            .finish()
    }
}

#[derive(Deserialize)]
struct ServiceAccountFile {
    #[serde(rename = "type")]
    type_: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
}

/// The service account key under [`GCP_SERVICE_ACCOUNT_KEY`], its RSA key parsed.
pub fn gcp_service_account(secret: &SecretData) -> Result<ServiceAccountKey, String> {
    const KEY: &str = GCP_SERVICE_ACCOUNT_KEY;
    let file: ServiceAccountFile = serde_json::from_str(text(secret, KEY)?).map_err(|e| {
        format!("{KEY:?} is not a JSON object (line {}, column {})", e.line(), e.column())
    })?;
    match file.type_.as_deref() {
        Some("service_account") => {}
        Some(other) => {
            return Err(format!(
                "{KEY:?} is a {other:?} file, not a service account key (\"type\": \
                 \"service_account\")"
            ));
        }
        None => return Err(format!("{KEY:?} has no \"type\" (\"service_account\")")),
    }
    let client_email = file
        .client_email
        .filter(|e| e.contains('@'))
        .ok_or_else(|| format!("{KEY:?} has no \"client_email\" (an email address)"))?;
    let pem = file.private_key.ok_or_else(|| format!("{KEY:?} has no \"private_key\""))?;
    let key = match PrivateKeyDer::from_pem_slice(pem.as_bytes()) {
        Ok(PrivateKeyDer::Pkcs8(der)) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
        Ok(PrivateKeyDer::Pkcs1(der)) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
        _ => {
            return Err(format!(
                "{KEY:?} has a \"private_key\" that is not a PEM RSA private key (PKCS#8)"
            ));
        }
    }
    .map_err(|_| {
        format!("{KEY:?} has a \"private_key\" that is not a usable RSA key (2048 bits or more)")
    })?;
    let token_uri = file.token_uri.unwrap_or_else(|| GOOGLE_TOKEN_URI.into());
    token_endpoint(&token_uri).map_err(|why| format!("{KEY:?} has a \"token_uri\" that {why}"))?;
    Ok(ServiceAccountKey {
        client_email,
        private_key_id: file.private_key_id.filter(|k| !k.is_empty()),
        token_uri,
        key: Arc::new(key),
    })
}

/// The client secret under [`AZURE_CLIENT_SECRET_KEY`], surrounding whitespace dropped.
pub fn azure_client_secret(secret: &SecretData) -> Result<&str, String> {
    const KEY: &str = AZURE_CLIENT_SECRET_KEY;
    let value = text(secret, KEY)?.trim();
    if value.is_empty() {
        return Err(format!("{KEY:?} is empty"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{KEY:?} holds control characters"));
    }
    Ok(value)
}

/// Whether a token endpoint may be sent a credential: HTTPS, or plain HTTP to a loopback
/// address only (a test's fake endpoint), never in clear over a network.
pub fn token_endpoint(url: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = url.parse().map_err(|_| "is not a URL".to_string())?;
    let host = uri.host().ok_or("has no host")?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback(host) => Ok(uri),
        Some("http") => Err("is plain http to a host that is not loopback (use https)".into()),
        _ => Err("is not an https URL".into()),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn text<'a>(secret: &'a SecretData, key: &str) -> Result<&'a str, String> {
    let value = secret.values.get(key).ok_or_else(|| format!("has no {key:?} key"))?;
    std::str::from_utf8(value).map_err(|_| format!("{key:?} is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(key: &str, value: &str) -> SecretData {
        SecretData {
            values: [(key.to_string(), value.as_bytes().to_vec())].into(),
            ..Default::default()
        }
    }

    const CREDENTIALS: &str = "\
# written by aws configure
[default]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key = default/secret+key

; a second profile, with a session and a nested setting
[bedrock]
AWS_ACCESS_KEY_ID=AKIDBEDROCK
aws_secret_access_key =  bedrock-secret  
aws_session_token = FwoGZXIvYXdzEJr//////////token==
s3 =
  max_concurrent_requests = 20

[no-secret]
aws_access_key_id = AKIDNOSECRET
";

    #[test]
    fn aws_profiles_comments_and_session_tokens() {
        let s = secret(AWS_CREDENTIALS_KEY, CREDENTIALS);
        let keys = aws_keys(&s, "default").unwrap();
        assert_eq!(keys.access_key_id, "AKIDDEFAULT");
        assert_eq!(keys.secret_access_key, "default/secret+key");
        assert_eq!(keys.session_token, None);
        let keys = aws_keys(&s, "bedrock").unwrap();
        assert_eq!(keys.access_key_id, "AKIDBEDROCK", "keys are case-insensitive");
        assert_eq!(keys.secret_access_key, "bedrock-secret", "values are trimmed");
        assert_eq!(keys.session_token.as_deref(), Some("FwoGZXIvYXdzEJr//////////token=="));
        let printed = format!("{keys:?}");
        assert!(
            printed.contains("AKIDBEDROCK") && !printed.contains("bedrock-secret"),
            "{printed}"
        );
        assert!(!printed.contains("token=="), "{printed}");
    }

    #[test]
    fn aws_problems_name_the_profile_and_field_never_a_value() {
        let s = secret(AWS_CREDENTIALS_KEY, CREDENTIALS);
        assert_eq!(
            aws_keys(&s, "no-secret").unwrap_err(),
            r#""credentials" profile [no-secret] has no aws_secret_access_key"#
        );
        assert_eq!(aws_keys(&s, "prod").unwrap_err(), r#""credentials" has no profile [prod]"#);
        assert_eq!(
            aws_keys(&SecretData::default(), "default").unwrap_err(),
            r#"has no "credentials" key"#
        );
        let bad = [
            ("aws_access_key_id = A\n", "line 1 sets a key before any [profile]"),
            ("[default\naws_access_key_id = A\n", "line 1 is not a [profile] header"),
            ("[default]\nsecret-without-equals\n", "line 2 is not a [profile], a comment"),
            (
                "[default]\naws_access_key_id = A B\naws_secret_access_key = s3cr3t\n",
                "has a aws_access_key_id that is empty or holds characters",
            ),
            ("[default]\naws_access_key_id = A\naws_secret_access_key =\n", "is empty"),
        ];
        for (text, want) in bad {
            let err = aws_keys(&secret(AWS_CREDENTIALS_KEY, text), "default").unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(!err.contains("s3cr3t") && !err.contains("without"), "{err}");
        }
    }

    #[test]
    fn service_account_fields_are_checked_without_quoting_the_key() {
        let file = |fields: serde_json::Value| {
            secret(GCP_SERVICE_ACCOUNT_KEY, &serde_json::to_string(&fields).unwrap())
        };
        let not_a_key = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n";
        let cases = [
            (serde_json::json!([]), "is not a JSON object"),
            (serde_json::json!({"type": "authorized_user"}), "not a service account key"),
            (serde_json::json!({"type": "service_account"}), "has no \"client_email\""),
            (
                serde_json::json!({"type": "service_account", "client_email": "a@b"}),
                "has no \"private_key\"",
            ),
            (
                serde_json::json!({"type": "service_account", "client_email": "a@b",
                                   "private_key": not_a_key}),
                "not a usable RSA key",
            ),
            (
                serde_json::json!({"type": "service_account", "client_email": "a@b",
                                   "private_key": "bm90IGEga2V5"}),
                "not a PEM RSA private key",
            ),
        ];
        for (fields, want) in cases {
            let err = gcp_service_account(&file(fields.clone())).unwrap_err();
            assert!(err.contains(want), "{fields}: {err}");
            assert!(!err.contains("bm90IGEga2V5"), "{err}");
        }
    }

    #[test]
    fn token_endpoints_are_https_or_loopback() {
        for ok in [
            "https://oauth2.googleapis.com/token",
            "http://127.0.0.1:9/t",
            "http://[::1]:9/t",
            "http://localhost/t",
        ] {
            assert!(token_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in
            ["http://oauth2.googleapis.com/token", "ftp://x/y", "/token", "http://10.0.0.1/t"]
        {
            assert!(token_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn azure_client_secrets_are_trimmed_and_must_be_there() {
        assert_eq!(
            azure_client_secret(&secret(AZURE_CLIENT_SECRET_KEY, "abc~.def\n")),
            Ok("abc~.def")
        );
        assert_eq!(
            azure_client_secret(&secret(AZURE_CLIENT_SECRET_KEY, " \n")),
            Err(r#""client-secret" is empty"#.into())
        );
        assert_eq!(
            azure_client_secret(&SecretData::default()),
            Err(r#"has no "client-secret" key"#.into())
        );
    }
}
