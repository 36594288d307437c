//! What one request says about the response before it, shared by the delta and SotW streams.
//!
//! Takes: nothing of its own. Gives: the [`Answer`] a request carries (first request, ACK, NACK
//! or an answer to a response that is no longer current), the recorded [`Nack`], and the error
//! for a type URL aixds does not serve.

use std::collections::BTreeMap;

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

/// A rejected response, kept for the debug view and for tracing the error to its objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nack {
    pub nonce: String,
    /// Envoy's `error_detail.message`.
    pub error: String,
    /// Name -> version of the resources Envoy rejected: those of the response that the error
    /// names, or all of them when it names none.
    pub rejected: BTreeMap<String, String>,
}

impl Nack {
    /// Envoy rejects a response whole but names the resources at fault in its message (e.g.
    /// "Error adding/updating cluster(s) aisb/default/a: ..."), so the response's resources are
    /// narrowed to those the message mentions.
    pub fn new<'a>(
        nonce: String,
        error: String,
        sent: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Nack {
        let sent: BTreeMap<String, String> =
            sent.into_iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        let named: BTreeMap<String, String> = sent
            .iter()
            .filter(|(name, _)| mentions(&error, name))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let rejected = if named.is_empty() { sent } else { named };
        Nack { nonce, error, rejected }
    }
}

/// Whether `text` mentions `name` as a whole word: "aisb/default/a" is not mentioned by
/// "aisb/default/ab".
fn mentions(text: &str, name: &str) -> bool {
    // '%' escapes characters in names built from objects (see `ObjectKey::path`).
    let word = |c: char| c.is_alphanumeric() || "-_./%".contains(c);
    text.match_indices(name).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + name.len()..].chars().next();
        // A trailing '.' ends a sentence rather than continuing the name.
        !before.is_some_and(word) && !after.is_some_and(|c| word(c) && c != '.')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nack_blames_the_resources_its_error_names() {
        let (a, b, ab) = (
            "aisb/default/a".to_string(),
            "aisb/default/b".to_string(),
            "aisb/default/ab".to_string(),
        );
        let v = "1".to_string();
        let sent = [(&a, &v), (&b, &v), (&ab, &v)];
        let nack = Nack::new(
            "3".into(),
            "Error adding/updating cluster(s) aisb/default/a: bad timeout".into(),
            sent,
        );
        assert_eq!(nack.rejected.keys().collect::<Vec<_>>(), [&a]);
        let nack = Nack::new("3".into(), "something went wrong".into(), sent);
        assert_eq!(nack.rejected.len(), 3);
        assert!(mentions("cluster aisb/default/b.", &b));
        assert!(!mentions("xaisb/default/b", &b));
        assert!(!mentions("cluster aisb/default/b%2Fc: bad", &b), "another object's escaped name");
    }
}

/// A request for a type aixds does not serve; the stream goes on without it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("aixds does not serve type {0:?}")]
pub struct UnknownType(pub String);
