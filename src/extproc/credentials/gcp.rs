//! GCP access tokens for a service account key: the OAuth2 JWT bearer grant (RFC 7523), the
//! way Google's client libraries use a key file.
//!
//! Each fetch signs a fresh assertion with the key (RS256): `iss` the service account,
//! `scope` cloud-platform, `aud` the key's `token_uri`, valid for an hour from now; and POSTs it
//! to `token_uri`.

use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;
use ring::signature::RSA_PKCS1_SHA256;

use super::token::{Fetch, HttpClient, Token, post_form};
use crate::api::ServiceAccountKey;

/// The scope Vertex AI needs.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The grant type of RFC 7523.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// How long an assertion is valid: the most Google accepts.
const ASSERTION_LIFETIME_SECS: u64 = 3600;

pub(super) struct ServiceAccountFetch {
    pub account: ServiceAccountKey,
}

impl Fetch for ServiceAccountFetch {
    async fn fetch(&self, http: &HttpClient) -> Result<Token, String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let assertion = assertion(&self.account, now)?;
        let form = [("grant_type", JWT_BEARER_GRANT), ("assertion", assertion.as_str())];
        post_form(http, &self.account.token_uri, &form).await
    }
}

/// The signed JWT for `account` issued at `now` (Unix seconds).
pub(super) fn assertion(account: &ServiceAccountKey, now: u64) -> Result<String, String> {
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = &account.private_key_id {
        header["kid"] = kid.clone().into();
    }
    let claims = serde_json::json!({
        "iss": account.client_email,
        "scope": CLOUD_PLATFORM_SCOPE,
        "aud": account.token_uri,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_SECS,
    });
    let signing_input = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    let mut signature = vec![0; account.key.public().modulus_len()];
    account
        .key
        .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), signing_input.as_bytes(), &mut signature)
        .map_err(|_| "signing the token request with the service account key failed".to_string())?;
    Ok(format!("{signing_input}.{}", base64url(&signature)))
}

/// Base64url without padding (RFC 7515's encoding of JWT parts).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_has_no_padding_and_url_safe_letters() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(&[0xfb, 0xff, 0xbf]), "-_-_");
    }
}
