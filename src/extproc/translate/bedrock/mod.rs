//! AWS Bedrock's runtime API: its own wire family, Converse, to and from the hub (`request`,
//! `response`, `stream`), and what Bedrock gives every model it hosts, which the Anthropic
//! family's models on InvokeModel use too (`invoke`): a path naming one model, streams in the
//! AWS event-stream framing, and error bodies `{"message": ...}` whose type is in the
//! `x-amzn-errortype` header.

pub mod embed;
pub mod invoke;
pub mod request;
pub mod response;
pub mod stream;

use serde_json::Value;

use super::eventstream::Message;
use super::percent_encode;
use super::stream::Hub;

/// The path of `operation` (`converse`, `invoke-with-response-stream`, ...) on `model`: a model
/// id (`anthropic.claude-3-5-haiku-20241022-v1:0`), an inference profile or an ARN, as one
/// percent-encoded path segment.
pub fn path(model: &str, operation: &str) -> String {
    format!("/model/{}/{operation}", percent_encode(model))
}

/// What a Converse answer does not say itself: the model (its responses do not name it), and
/// the id and time to stamp it with.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub id: String,
    pub model: String,
    pub created: u64,
}

/// The message of a Bedrock error body: `message`, or `Message` as some AWS services write it.
pub fn error_message(body: &Value) -> Option<&str> {
    body.get("message").or_else(|| body.get("Message")).and_then(Value::as_str)
}

/// The error type of a Bedrock error response (`x-amzn-errortype`), without the namespace AWS
/// may add after a colon (`ValidationException:http://internal.amazon.com/...`).
pub fn error_type(headers: &[(String, String)]) -> Option<&str> {
    headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("x-amzn-errortype"))
        .map(|(_, value)| value.split(':').next().unwrap_or_default().trim())
        .filter(|kind| !kind.is_empty())
}

/// A stream message that says the stream failed, as a hub error: an `exception` (a modeled
/// error such as `throttlingException`, its message in the payload) or an `error` (its code and
/// message in headers). `None` for an event.
pub fn stream_error(m: &Message) -> Option<Hub> {
    let (kind, message) = match m.header(":message-type") {
        Some("exception") => {
            let kind = m.header(":exception-type").unwrap_or("exception");
            let payload = serde_json::from_slice::<Value>(&m.payload).ok();
            let message = payload.as_ref().and_then(error_message).map(str::to_string);
            (kind, message)
        }
        Some("error") => (
            m.header(":error-code").unwrap_or("error"),
            m.header(":error-message").map(str::to_string),
        ),
        _ => return None,
    };
    let message = message
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| format!("the Bedrock stream failed with {kind}"));
    Some(Hub::Error { message, kind: Some(kind.to_string()) })
}

/// Anthropic's error type for a Bedrock exception.
pub fn anthropic_error_type(kind: &str) -> &'static str {
    match kind.to_ascii_lowercase().trim_end_matches("exception") {
        "validation" => "invalid_request_error",
        "accessdenied" => "permission_error",
        "resourcenotfound" => "not_found_error",
        "throttling" | "servicequotaexceeded" => "rate_limit_error",
        "serviceunavailable" => "overloaded_error",
        "modeltimeout" => "timeout_error",
        _ => "api_error",
    }
}
