//! What one request says about the response before it, shared by the delta and SotW streams.
//!
//! Takes: nothing of its own. Gives: the [`Answer`] a request carries (first request, ACK, NACK
//! or an answer to a response that is no longer current), the recorded [`Nack`], and the error
//! for a type URL aixds does not serve.

use serde::Serialize;

/// How a request relates to the responses sent before it for its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// No `response_nonce`: a first request or a subscription change.
    Request,
    /// Envoy applied the response with this nonce.
    Ack { nonce: String },
    /// Envoy rejected the response with this nonce.
    Nack { nonce: String, error: String },
    /// An answer to a response that is no longer pending: its ACK/NACK part is ignored.
    Stale { nonce: String },
}

/// A rejected response, kept for the debug view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nack {
    pub nonce: String,
    /// Envoy's `error_detail.message`.
    pub error: String,
}

/// A request for a type aixds does not serve; the stream goes on without it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("aixds does not serve type {0:?}")]
pub struct UnknownType(pub String);
