//! Envoy's own replies in the client's format.
//!
//! Takes: nothing. Gives: the HTTP connection manager's `local_reply_config`, which rewrites the
//! replies Envoy makes itself — no healthy upstream, a connection refused or reset (503), a reply
//! that is not HTTP (502), an upstream timeout (504), a body over a buffer limit (413), the
//! translation ext_proc unreachable (503) — into the error JSON the client's SDK parses, with
//! `content-type: application/json`: Anthropic's for an Anthropic client, Cohere's for a Cohere
//! client, OpenAI's for any other. The router phase records which API the client speaks in the
//! request's metadata; a request it never parsed is judged by its path (Anthropic's under
//! `/v1/messages` and `/anthropic`, Cohere's under `/cohere`). The bodies are the ones the translation writes for the same status
//! ([`error_body`]), with Envoy's own text as the message. A 503 also says when to retry.
//! Streamed requests get the same JSON: the status comes before any event.
//!
//! Replies that are JSON already (aixds's immediate responses, the routes' 404s, the endpoint
//! picker's) keep their body; a 503 among them gets `retry-after` too.
//!
//! Once a response has started (its 200 and first events on their way to the client) nothing
//! here applies: when the backend then resets, closes mid-body or outlasts the route timeout,
//! Envoy can only end the client's stream, and the client sees the body end before its last
//! chunk (see RELIABILITY.md for what each SDK raises).

use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLogFilter, AndFilter, ComparisonFilter, ExtensionFilter, HeaderFilter, MetadataFilter,
    OrFilter, StatusCodeFilter, access_log_filter, comparison_filter, extension_filter,
};
use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, RuntimeUInt32, header_value_option,
};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::ResponseMapper;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    MetadataMatcher, RegexMatcher, StringMatcher, ValueMatcher, metadata_matcher, string_matcher,
    value_matcher,
};
use envoy_types::pb::google::protobuf::{BoolValue, Value, value};
use envoy_types::util::pack_any;
use prost::Message;

use super::canonical;

use crate::extproc::translate::{ClientSchema, error_body};
use crate::wire::{ATTEMPT_METADATA_NAMESPACE, CLIENT_METADATA_KEY};

/// Seconds a client is asked to wait after a 503: about how long a failed replica or backend
/// takes to leave Envoy's rotation (health checks every second) or come back.
const RETRY_AFTER_SECONDS: u32 = 1;

/// The `:path` of a request to Anthropic's API, query included: the paths
/// `ClientSchema::of_path` gives to Anthropic.
const ANTHROPIC_PATH: &str = r"(/v1/messages|/anthropic)(/[^?#]*)?([?#].*)?";

/// The `:path` of a request to Cohere's API, query included: the paths `ClientSchema::of_path`
/// gives to Cohere.
const COHERE_PATH: &str = r"/cohere(/[^?#]*)?([?#].*)?";

/// Statuses whose error type in OpenAI's or Anthropic's schema differs from the type of their
/// class (any 5xx like 500, anything else like 400); see `translate::error`.
const TYPED_STATUSES: [u16; 8] = [401, 403, 404, 413, 429, 503, 504, 529];

/// Cohere's error body is the same whatever the status: only a 503 differs, by its
/// `retry-after`.
const COHERE_STATUSES: [u16; 1] = [503];

/// Every message: what Envoy said, and its response code details (e.g. `no_healthy_upstream`).
const MESSAGE: &str = "%LOCAL_REPLY_BODY% (%RESPONSE_CODE_DETAILS%)";

/// The `LocalReplyConfig`, encoded. Its error bodies are `google.protobuf.Struct`s, maps that
/// prost would encode in a random order, so they are encoded here in a fixed one (see
/// [`super::canonical`]); the rest is prost's.
pub(super) fn encoded() -> Vec<u8> {
    let mut config = Vec::new();
    for (mapper, body) in mappers() {
        let mut bytes = mapper.encode_to_vec();
        if let Some(body) = body {
            // SubstitutionFormatString.json_format is field 2, ResponseMapper.body_format_override
            // field 4.
            let mut format = Vec::new();
            canonical::append_field(&mut format, 2, &encoded_struct(&body));
            canonical::append_field(&mut bytes, 4, &format);
        }
        // LocalReplyConfig.mappers is field 1.
        canonical::append_field(&mut config, 1, &bytes);
    }
    config
}

/// Each mapper, in order (the first that matches applies), with the JSON body it writes.
fn mappers() -> Vec<(ResponseMapper, Option<serde_json::Value>)> {
    let mut mappers = vec![
        // JSON already: a 503 only learns when to retry; nothing else changes.
        (
            ResponseMapper {
                filter: Some(all([is_json(), status(comparison_filter::Op::Eq, 503)])),
                headers_to_add: retry_after(503),
                ..Default::default()
            },
            None,
        ),
        (ResponseMapper { filter: Some(is_json()), ..Default::default() }, None),
    ];
    // Anthropic's and Cohere's clients first: the OpenAI mappers match any request.
    for client in [ClientSchema::Anthropic, ClientSchema::Cohere, ClientSchema::OpenAI] {
        let (path, typed) = match client {
            ClientSchema::Anthropic => {
                (Some(client_of(client, ANTHROPIC_PATH)), &TYPED_STATUSES[..])
            }
            ClientSchema::Cohere => (Some(client_of(client, COHERE_PATH)), &COHERE_STATUSES[..]),
            ClientSchema::OpenAI => (None, &TYPED_STATUSES[..]),
        };
        let classes = typed
            .iter()
            .map(|s| (comparison_filter::Op::Eq, *s, *s))
            .chain([(comparison_filter::Op::Ge, 500, 500), (comparison_filter::Op::Ge, 0, 400)]);
        for (op, value, like) in classes {
            let filters = path.iter().cloned().chain([status(op, value)]);
            let mapper = ResponseMapper {
                filter: Some(all(filters)),
                headers_to_add: retry_after(like),
                ..Default::default()
            };
            mappers.push((mapper, Some(body(client, like))));
        }
    }
    mappers
}

/// The client's error body for `status`, its message the [`MESSAGE`] format.
fn body(client: ClientSchema, status: u16) -> serde_json::Value {
    serde_json::from_slice(&error_body(client, status, MESSAGE))
        .unwrap_or_else(|e| unreachable!("error_body writes JSON: {e}"))
}

/// An encoded `google.protobuf.Struct` of a JSON object's fields, keys sorted; anything else is
/// an empty one.
fn encoded_struct(object: &serde_json::Value) -> Vec<u8> {
    let fields = object.as_object().into_iter().flatten();
    canonical::map(fields.map(|(k, v)| (k.clone(), encoded_value(v))))
}

/// An encoded `google.protobuf.Value`.
fn encoded_value(v: &serde_json::Value) -> Vec<u8> {
    let kind = match v {
        serde_json::Value::Object(_) => {
            // Value.struct_value is field 5.
            let mut bytes = Vec::new();
            canonical::append_field(&mut bytes, 5, &encoded_struct(v));
            return bytes;
        }
        serde_json::Value::Null => value::Kind::NullValue(0),
        serde_json::Value::Bool(b) => value::Kind::BoolValue(*b),
        serde_json::Value::Number(n) => value::Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => value::Kind::StringValue(s.clone()),
        // Error bodies hold no lists.
        serde_json::Value::Array(_) => value::Kind::NullValue(0),
    };
    Value { kind: Some(kind) }.encode_to_vec()
}

fn retry_after(status: u16) -> Vec<HeaderValueOption> {
    if status != 503 {
        return Vec::new();
    }
    vec![HeaderValueOption {
        header: Some(HeaderValue {
            key: "retry-after".into(),
            value: RETRY_AFTER_SECONDS.to_string(),
            ..Default::default()
        }),
        append_action: header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }]
}

fn all(filters: impl IntoIterator<Item = AccessLogFilter>) -> AccessLogFilter {
    let mut filters: Vec<AccessLogFilter> = filters.into_iter().collect();
    if filters.len() == 1 {
        return filters.remove(0);
    }
    AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::AndFilter(AndFilter {
            filters,
        })),
    }
}

fn status(op: comparison_filter::Op, code: u16) -> AccessLogFilter {
    AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::StatusCodeFilter(
            StatusCodeFilter {
                comparison: Some(ComparisonFilter {
                    op: op as i32,
                    value: Some(RuntimeUInt32 {
                        default_value: u32::from(code),
                        // Envoy requires a key; nothing sets it.
                        runtime_key: "aixds.local_reply.status".into(),
                    }),
                }),
            },
        )),
    }
}

/// The request came from a client of `schema`: the router phase recorded so in the request's
/// metadata, or, where it recorded nothing (aixds unreachable, or Envoy refused the request
/// before aixds saw its body), the `:path` matches `path_regex`, its API's paths. Once the
/// router phase has run the path does not count: the upstream or pool phase rewrites it for a
/// backend of another schema.
fn client_of(schema: ClientSchema, path_regex: &str) -> AccessLogFilter {
    let path = StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex: path_regex.into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let path = AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::HeaderFilter(HeaderFilter {
            header: Some(HeaderMatcher {
                name: ":path".into(),
                header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                    path,
                )),
                ..Default::default()
            }),
        })),
    };
    let name = StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(schema.name().into())),
        ..Default::default()
    };
    let said_so = client(value_matcher::MatchPattern::StringMatch(name), false);
    // Envoy never matches `present_match: false` against a value that is there.
    let said_nothing = client(value_matcher::MatchPattern::PresentMatch(false), true);
    AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::OrFilter(OrFilter {
            filters: vec![said_so, all([said_nothing, path])],
        })),
    }
}

/// The router phase's record of the client's API matched against `pattern`; `if_absent` where
/// it recorded none.
fn client(pattern: value_matcher::MatchPattern, if_absent: bool) -> AccessLogFilter {
    AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::MetadataFilter(
            MetadataFilter {
                matcher: Some(MetadataMatcher {
                    filter: ATTEMPT_METADATA_NAMESPACE.into(),
                    path: vec![metadata_matcher::PathSegment {
                        segment: Some(metadata_matcher::path_segment::Segment::Key(
                            CLIENT_METADATA_KEY.into(),
                        )),
                    }],
                    value: Some(ValueMatcher { match_pattern: Some(pattern) }),
                    invert: false,
                }),
                match_if_key_not_found: Some(BoolValue { value: if_absent }),
            },
        )),
    }
}

/// The reply already carries a JSON body.
fn is_json() -> AccessLogFilter {
    let cel = ExpressionFilter {
        expression: "response.headers['content-type'].startsWith('application/json')".into(),
        ..Default::default()
    };
    AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::ExtensionFilter(
            ExtensionFilter {
                name: "envoy.access_loggers.extension_filters.cel".into(),
                config_type: Some(extension_filter::ConfigType::TypedConfig(pack_any(cel))),
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::substitution_format_string::Format;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::LocalReplyConfig;

    #[test]
    fn the_hand_encoded_config_decodes_as_envoy_reads_it() {
        let bytes = encoded();
        assert_eq!(bytes, encoded(), "stable bytes");
        let config = LocalReplyConfig::decode(bytes.as_slice()).unwrap();
        assert_eq!(config.mappers.len(), mappers().len());
        // The Anthropic 413 and the OpenAI 5xx, as the translation writes them.
        let json = |i: usize| {
            let Some(Format::JsonFormat(s)) =
                config.mappers[i].body_format_override.as_ref().and_then(|f| f.format.clone())
            else {
                panic!("mapper {i} writes no JSON")
            };
            s
        };
        let anthropic_413 = json(2 + 3);
        assert_eq!(anthropic_413.fields.len(), 2, "type and error");
        let Some(value::Kind::StructValue(error)) = &anthropic_413.fields["error"].kind else {
            panic!("{anthropic_413:?}")
        };
        let text = |v: &Value| match &v.kind {
            Some(value::Kind::StringValue(s)) => s.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(text(&error.fields["type"]), "request_too_large");
        assert_eq!(text(&error.fields["message"]), MESSAGE);
        let cohere_503 = json(2 + TYPED_STATUSES.len() + 2);
        assert_eq!(cohere_503.fields.len(), 1, "message only");
        assert_eq!(text(&cohere_503.fields["message"]), MESSAGE);
        assert_eq!(config.mappers[2 + TYPED_STATUSES.len() + 2].headers_to_add.len(), 1);
        let openai_5xx = json(2 + 2 * (TYPED_STATUSES.len() + 2) + COHERE_STATUSES.len() + 2 - 2);
        let Some(value::Kind::StructValue(error)) = &openai_5xx.fields["error"].kind else {
            panic!("{openai_5xx:?}")
        };
        assert_eq!(text(&error.fields["type"]), "server_error");
        assert_eq!(error.fields["param"].kind, Some(value::Kind::NullValue(0)));
    }
}
