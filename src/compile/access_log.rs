//! The access log every listener writes when `--access-log` asks for one: a JSON object per
//! request, with what an AI gateway's operator looks for — the model, the backend cluster and
//! host, the attempts (fallback), and the token usage the translation ext_proc wrote to the
//! `io.envoy.ai_gateway` dynamic metadata under the route's `llmRequestCosts` keys.
//!
//! Takes: the log's path. Gives: the HTTP connection manager's access log. The JSON format is a
//! protobuf map, so the logger config is encoded by hand in a fixed order (see
//! [`super::canonical`]): otherwise every listener would change version on every compile.

use envoy_types::pb::envoy::config::accesslog::v3::{AccessLog, access_log};
use envoy_types::pb::envoy::config::core::v3::SubstitutionFormatString;
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::FileAccessLog;
use envoy_types::pb::google::protobuf::{Any, Value, value};
use prost::{Message, Name};

use super::canonical;
use crate::wire::METADATA_NAMESPACE;

/// The JSON fields: Envoy substitutes each command, typed (numbers stay numbers, the metadata
/// namespace is an object, a missing value is `null`).
fn fields() -> Vec<(&'static str, String)> {
    vec![
        ("start_time", "%START_TIME%".into()),
        ("method", "%REQ(:METHOD)%".into()),
        ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%".into()),
        ("status", "%RESPONSE_CODE%".into()),
        ("response_flags", "%RESPONSE_FLAGS%".into()),
        ("model", format!("%REQ({})%", crate::api::MODEL_HEADER)),
        ("route", "%ROUTE_NAME%".into()),
        ("cluster", "%UPSTREAM_CLUSTER%".into()),
        ("upstream_host", "%UPSTREAM_HOST%".into()),
        ("attempts", "%UPSTREAM_REQUEST_ATTEMPT_COUNT%".into()),
        ("duration_ms", "%DURATION%".into()),
        ("request_id", "%REQ(X-REQUEST-ID)%".into()),
        ("usage", format!("%DYNAMIC_METADATA({METADATA_NAMESPACE})%")),
    ]
}

pub(super) fn file(path: &str) -> AccessLog {
    let format = canonical::map(fields().into_iter().map(|(k, v)| {
        (k.to_string(), Value { kind: Some(value::Kind::StringValue(v)) }.encode_to_vec())
    }));
    // SubstitutionFormatString.json_format is field 2; FileAccessLog.log_format is field 5.
    let mut log_format = SubstitutionFormatString::default().encode_to_vec();
    canonical::append_field(&mut log_format, 2, &format);
    let mut config = FileAccessLog { path: path.to_string(), ..Default::default() }.encode_to_vec();
    canonical::append_field(&mut config, 5, &log_format);
    AccessLog {
        name: "envoy.access_loggers.file".into(),
        config_type: Some(access_log::ConfigType::TypedConfig(Any {
            type_url: FileAccessLog::type_url(),
            value: config,
        })),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::access_loggers::file::v3::file_access_log;

    #[test]
    fn the_hand_encoded_logger_decodes_as_envoy_reads_it() {
        let log = file("/tmp/access.log");
        assert_eq!(log, file("/tmp/access.log"), "stable bytes");
        let Some(access_log::ConfigType::TypedConfig(any)) = log.config_type else { panic!() };
        let config = FileAccessLog::decode(any.value.as_slice()).unwrap();
        assert_eq!(config.path, "/tmp/access.log");
        let Some(file_access_log::AccessLogFormat::LogFormat(format)) = config.access_log_format
        else {
            panic!("{config:?}")
        };
        let Some(envoy_types::pb::envoy::config::core::v3::substitution_format_string::Format::JsonFormat(json)) =
            format.format
        else {
            panic!("{format:?}")
        };
        assert_eq!(json.fields.len(), fields().len());
        assert!(json.fields.contains_key("usage"));
    }
}
