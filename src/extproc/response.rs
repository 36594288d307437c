//! Translating one response back for the client, as it streams: shared by the upstream phase
//! (backend schema → the client's) and the pool phase (OpenAI → Anthropic, see `pool.rs`).

use envoy_types::pb::envoy::service::ext_proc::v3::{HeaderMutation, HttpHeaders};

use super::service::{find, header_pairs, mutation};
use super::translate::{ClientSchema, ResponseTranslator, Usage, translate_error};
use crate::api::APISchema;

/// How much of an upstream error body is kept to translate; error bodies are small, and one
/// that is not should not fill memory.
const MAX_ERROR_BODY: usize = 1024 * 1024;

pub(super) struct ResponseTranslation {
    client: ClientSchema,
    backend: APISchema,
    translator: ResponseTranslator,
    /// The response status, once its headers came; 0 before.
    pub status: u16,
    /// A non-2xx response's headers and body, kept whole to translate at its end.
    error_headers: Vec<(String, String)>,
    error_body: Vec<u8>,
    /// The 2xx body could not be translated; the rest of it is dropped.
    pub failed: Option<String>,
}

impl ResponseTranslation {
    pub fn new(client: ClientSchema, backend: APISchema, translator: ResponseTranslator) -> Self {
        ResponseTranslation {
            client,
            backend,
            translator,
            status: 0,
            error_headers: Vec::new(),
            error_body: Vec::new(),
            failed: None,
        }
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn usage(&self) -> Usage {
        self.translator.usage()
    }

    /// Records the response's status where its headers are not seen (a passthrough's, whose
    /// headers pass unchanged: Envoy drops their `content-length` itself). Only the first
    /// status counts.
    pub fn on_status(&mut self, status: u16) {
        if self.status == 0 {
            self.status = status;
        }
    }

    /// The content type of what the client will get, and no `content-length`: the body
    /// changes length as it is translated, and Envoy frames it anew.
    pub fn on_headers(&mut self, message: &HttpHeaders) -> Option<HeaderMutation> {
        let headers = header_pairs(message);
        self.status = find(&headers, ":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        let content_type =
            if self.ok() { self.translator.content_type() } else { "application/json" };
        if !self.ok() {
            self.error_headers = headers.clone();
        }
        let set = vec![("content-type".to_string(), content_type.to_string())];
        let remove = match find(&headers, "content-length") {
            Some(_) => vec!["content-length".to_string()],
            None => Vec::new(),
        };
        mutation(set, remove)
    }

    /// What replaces `chunk` for the client. An error body comes out whole at its end, in the
    /// client's format; a 2xx body that fails to translate or is cut short ends in an error in
    /// that format (an error event for a stream), as soon as that is known. `context` (the
    /// backend, or the phase) only names where in a warning.
    pub fn on_body(&mut self, chunk: &[u8], end_of_stream: bool, context: &str) -> Vec<u8> {
        if !self.ok() {
            let room = MAX_ERROR_BODY.saturating_sub(self.error_body.len());
            self.error_body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if end_of_stream {
                let headers = &self.error_headers;
                translate_error(self.client, self.backend, self.status, headers, &self.error_body)
            } else {
                Vec::new()
            }
        } else if self.failed.is_some() {
            Vec::new()
        } else {
            match self.translator.feed(chunk, end_of_stream) {
                Ok(out) => {
                    if self.translator.truncated() {
                        tracing::warn!(
                            "{context}: the stream ended before the response was complete"
                        );
                    }
                    out
                }
                Err(e) => {
                    tracing::warn!("{context}: response not translated: {e}");
                    self.failed = Some(e.to_string());
                    // Now, not at the end: a stream may go on for long after it went wrong.
                    self.translator.failure(&e.to_string())
                }
            }
        }
    }

    /// The upstream's stream ended without saying it was complete (the client was told).
    pub fn truncated(&self) -> bool {
        self.translator.truncated()
    }
}
