//! AWS Signature Version 4 (with the `aws-sigv4` crate) of the request exactly as it leaves
//! Envoy: its method, final `:authority` and `:path`, final body, and the headers that matter.
//!
//! Signed: `host` (the `:authority`), `content-type`, every `x-amz-*` header, `x-amz-date`, and
//! `x-amz-security-token` for temporary keys. Other headers are left out of the signature: SigV4
//! asks only for `host` and the `x-amz-*` ones, and Envoy may still add or change headers such
//! as `x-forwarded-*`, `x-request-id` or `content-length`/`transfer-encoding` after the filter,
//! which would break a signature that covered them. The body is covered anyway: its SHA-256 is
//! part of the canonical request. No `x-amz-content-sha256` header is sent: only S3 reads it,
//! and Bedrock (like AWS's own SDKs for it) goes without.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

use crate::api::AwsKeys;

/// The signing name of Bedrock's runtime API (`bedrock-runtime.{region}.amazonaws.com`).
pub const BEDROCK_SERVICE: &str = "bedrock";

/// Static keys and the region and service they sign for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigV4 {
    pub keys: AwsKeys,
    pub region: String,
    pub service: &'static str,
}

/// The parts of a request that are signed.
pub struct Request<'a> {
    pub method: &'a str,
    pub authority: &'a str,
    /// Path and query, as sent (already percent-encoded).
    pub path: &'a str,
    /// The request's headers: those of them that are signed are picked here.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Whether a header is signed (see the module's docs).
fn signed(name: &str) -> bool {
    name == "content-type" || name.starts_with("x-amz-")
}

impl SigV4 {
    /// The headers to set on `request` (`authorization`, `x-amz-date`, `x-amz-security-token`),
    /// signed as of `time`.
    pub fn sign(
        &self,
        request: &Request,
        time: SystemTime,
    ) -> Result<Vec<(&'static str, String)>, String> {
        let credentials = Credentials::new(
            &self.keys.access_key_id,
            &self.keys.secret_access_key,
            self.keys.session_token.clone(),
            None,
            "aixds",
        );
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(self.service)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("SigV4 parameters: {e}"))?
            .into();
        let headers = request
            .headers
            .iter()
            .filter(|(name, _)| signed(name))
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .chain([("host", request.authority)]);
        let uri = format!("https://{}{}", request.authority, request.path);
        let signable =
            SignableRequest::new(request.method, uri, headers, SignableBody::Bytes(request.body))
                .map_err(|e| format!("the request cannot be signed: {e}"))?;
        let (instructions, _) =
            sign(signable, &params).map_err(|e| format!("SigV4 signing failed: {e}"))?.into_parts();
        let (headers, _) = instructions.into_parts();
        Ok(headers.into_iter().map(|h| (h.name(), h.value().to_string())).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The credentials, region, service and time of AWS's SigV4 test suite (as published with
    /// the AWS SDKs' signers, e.g. `aws-signing-test-suite/v4` in the `aws-sigv4` crate).
    fn suite(session_token: Option<&str>) -> (SigV4, SystemTime) {
        let signer = SigV4 {
            keys: AwsKeys {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
                session_token: session_token.map(str::to_string),
            },
            region: "us-east-1".into(),
            service: "service",
        };
        // 2015-08-30T12:36:00Z
        (signer, SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160))
    }

    fn post(headers: &[(String, String)]) -> Request<'_> {
        Request {
            method: "POST",
            authority: "example.amazonaws.com",
            path: "/",
            headers,
            body: b"",
        }
    }

    #[test]
    fn post_vanilla_matches_the_published_signature() {
        let (signer, time) = suite(None);
        let headers = signer.sign(&post(&[]), time).unwrap();
        assert_eq!(
            headers,
            [
                ("x-amz-date", "20150830T123600Z".to_string()),
                (
                    "authorization",
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/\
                     aws4_request, SignedHeaders=host;x-amz-date, \
                     Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
                        .to_string()
                ),
            ]
        );
    }

    #[test]
    fn session_tokens_are_signed_and_sent() {
        const TOKEN: &str = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";
        let (signer, time) = suite(Some(TOKEN));
        let headers = signer.sign(&post(&[]), time).unwrap();
        let get = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("x-amz-security-token"), Some(TOKEN));
        // post-sts-header-before: the token is part of the signature.
        assert!(
            get("authorization").unwrap().ends_with(
                "SignedHeaders=host;x-amz-date;x-amz-security-token, \
                 Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"
            ),
            "{headers:?}"
        );
    }

    #[test]
    fn only_host_content_type_and_amz_headers_are_signed() {
        let (signer, time) = suite(None);
        let headers: Vec<(String, String)> = [
            ("content-type", "application/json"),
            ("x-amz-target", "x"),
            ("user-agent", "openai-python"),
            ("x-forwarded-for", "10.0.0.1"),
            ("content-length", "2"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        let request = Request { body: b"{}", ..post(&headers) };
        let signed = signer.sign(&request, time).unwrap();
        let authorization = &signed.iter().find(|(n, _)| *n == "authorization").unwrap().1;
        assert!(
            authorization.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-target,"),
            "{authorization}"
        );
        let other_body = Request { body: b"{\"a\":1}", ..post(&headers) };
        let resigned = signer.sign(&other_body, time).unwrap();
        assert_ne!(signed, resigned, "the body is signed");
    }
}
