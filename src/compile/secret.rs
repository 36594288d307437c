//! TLS certificates for HTTPS listeners, served to Envoy over SDS on the ADS stream.

use crate::api::ObjectKey;

/// The SDS name of the certificate in the Secret `key`.
pub(super) fn sds_name(key: &ObjectKey) -> String {
    format!("secret/{}", key.path())
}
