//! The upstream phase: once per attempt, for the backend Envoy picked.
//!
//! Takes: the request headers (with the internal headers the router phase and the route set),
//! the whole request body, then the response headers and body as they stream. Gives: the
//! request translated for the backend's schema, with the route's and backend's mutations and the
//! backend's credential, nothing internal left in it; the response translated back for the
//! client, chunk by chunk; token usage as dynamic metadata at the end.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as In;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Out;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation as EnvoyBodyMutation, BodyResponse, CommonResponse, HeaderMutation,
    HeadersResponse, HttpHeaders, ProcessingRequest, ProcessingResponse, TrailersResponse,
    body_mutation,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value};
use serde_json::Map;
use tonic::Status;

use super::runtime::{BackendRuntime, CLIENT_AUTH_HEADERS, RouteBackendRuntime, RuntimeConfig};
use super::service::{describe, find, header_pairs, immediate, mutation};
use super::translate::{
    ClientSchema, Endpoint, ResponseTranslator, Usage, error_body, parse_request,
    response_translator, translate_error, translate_request,
};
use super::{
    ATTEMPT_METADATA_NAMESPACE, ENDPOINT_HEADER, INTERNAL_HEADER_PREFIX, METADATA_NAMESPACE,
    ROUTE_BACKEND_HEADER,
};
use crate::api::{
    APISchema, BodyMutation, HeaderMutation as ApiHeaderMutation, LLMRequestCost,
    LLMRequestCostType,
};

/// How much of an upstream error body is kept to translate; error bodies are small, and one
/// that is not should not fill memory.
const MAX_ERROR_BODY: usize = 1024 * 1024;

pub(super) struct UpstreamPhase {
    runtime: Arc<RuntimeConfig>,
    /// The cluster this attempt goes to, from the filter's gRPC metadata.
    cluster: String,
    headers: Vec<(String, String)>,
    /// The client's endpoint path and the route backendRef id: from the internal headers on a
    /// first attempt, from what that attempt kept in dynamic metadata on a retry (the first
    /// attempt removed the headers, and Envoy hands every attempt the same header map).
    endpoint: Option<String>,
    route_backend: Option<String>,
    /// Set once the request was translated: how to translate the response.
    response: Option<ResponseState>,
}

struct ResponseState {
    client: ClientSchema,
    backend: APISchema,
    translator: ResponseTranslator,
    costs: Vec<LLMRequestCost>,
    status: u16,
    /// A non-2xx body, kept whole to translate at its end.
    error_body: Vec<u8>,
    /// The 2xx body could not be translated: the client was told, the rest of it is dropped.
    failed: bool,
}

impl UpstreamPhase {
    pub(super) fn new(runtime: Arc<RuntimeConfig>, cluster: String) -> Self {
        UpstreamPhase {
            runtime,
            cluster,
            headers: Vec::new(),
            endpoint: None,
            route_backend: None,
            response: None,
        }
    }

    pub(super) fn on_message(
        &mut self,
        request: ProcessingRequest,
    ) -> Result<ProcessingResponse, Status> {
        let response = match request.request {
            Some(In::RequestHeaders(headers)) => {
                let kept = request
                    .metadata_context
                    .as_ref()
                    .and_then(|m| m.filter_metadata.get(ATTEMPT_METADATA_NAMESPACE));
                let kept = kept.map(|s| (text(s, "endpoint"), text(s, "route_backend")));
                return Ok(self.on_request_headers(&headers, kept.unwrap_or_default()));
            }
            Some(In::RequestBody(body)) => return Ok(self.on_request_body(&body.body)),
            Some(In::ResponseHeaders(headers)) => {
                Out::ResponseHeaders(self.on_response_headers(&headers))
            }
            Some(In::ResponseBody(body)) => {
                return Ok(self.on_response_body(&body.body, body.end_of_stream));
            }
            Some(In::RequestTrailers(_)) => Out::RequestTrailers(TrailersResponse::default()),
            Some(In::ResponseTrailers(_)) => Out::ResponseTrailers(TrailersResponse::default()),
            None => {
                return Err(Status::invalid_argument(format!(
                    "upstream phase: unexpected {}",
                    describe(&request)
                )));
            }
        };
        Ok(ProcessingResponse { response: Some(response), ..Default::default() })
    }

    fn backend(&self) -> Option<&BackendRuntime> {
        self.runtime.backends.get(&self.cluster)
    }

    fn route_backend(&self) -> Option<&RouteBackendRuntime> {
        self.route_backend.as_ref().and_then(|id| self.runtime.route_backends.get(id))
    }

    fn on_request_headers(
        &mut self,
        message: &HttpHeaders,
        kept: (Option<String>, Option<String>),
    ) -> ProcessingResponse {
        self.headers = header_pairs(message);
        let header = |name| find(&self.headers, name).map(str::to_string);
        self.endpoint = header(ENDPOINT_HEADER).or(kept.0);
        self.route_backend = header(ROUTE_BACKEND_HEADER).or(kept.1);
        let mut response = HeadersResponse::default();
        if message.end_of_stream {
            // No body to translate (the router phase lets none through to a known endpoint):
            // still no internal header or client credential leaves Envoy.
            let backend = self.backend();
            let ops = self.header_ops(backend, self.route_backend(), Vec::new());
            response.response = Some(CommonResponse {
                header_mutation: self.header_mutation(ops),
                ..Default::default()
            });
        }
        ProcessingResponse { response: Some(Out::RequestHeaders(response)), ..Default::default() }
    }

    fn on_request_body(&mut self, body: &[u8]) -> ProcessingResponse {
        let endpoint = self.endpoint.as_deref().and_then(Endpoint::from_path);
        let Some(endpoint) = endpoint else {
            let message = "no LLM API is served at this path";
            return immediate(404, error_body(ClientSchema::OpenAI, 404, message), "aixds_no_api");
        };
        let client = endpoint.client_schema();
        let Some(backend) = self.backend() else {
            let message = format!("backend {} is not configured on this gateway", self.cluster);
            tracing::warn!("upstream phase: {message}");
            return immediate(503, error_body(client, 503, &message), "aixds_unknown_backend");
        };
        let route = self.route_backend();
        let translated = parse_request(endpoint, body).and_then(|parsed| {
            let model_override = route.and_then(|r| r.model_name_override.as_deref());
            let translated = translate_request(&parsed, &backend.schema, model_override)?;
            Ok((parsed, translated))
        });
        let (parsed, translated) = match translated {
            Ok(t) => t,
            Err(e) => {
                let status = e.status();
                return immediate(
                    status,
                    error_body(client, status, &e.to_string()),
                    "aixds_translation_failed",
                );
            }
        };
        let mutations =
            [backend.body_mutation.as_ref(), route.and_then(|r| r.body_mutation.as_ref())];
        let body = mutate_body(translated.body, mutations.into_iter().flatten());
        let base = vec![
            (":path".to_string(), Some(translated.path)),
            ("content-length".to_string(), Some(body.len().to_string())),
        ];
        let ops = self.header_ops(Some(backend), route, base);
        let header_mutation = self.header_mutation(ops);
        tracing::debug!(
            backend = %self.cluster,
            model = %translated.model,
            stream = translated.stream,
            "translated a request"
        );
        let translator = response_translator(endpoint, backend.schema.name, parsed.stream)
            .include_usage(parsed.include_usage);
        self.response = Some(ResponseState {
            client,
            backend: backend.schema.name,
            translator,
            costs: route.map(|r| r.costs.clone()).unwrap_or_default(),
            status: 0,
            error_body: Vec::new(),
            failed: false,
        });
        let kept =
            [("endpoint", self.endpoint.clone()), ("route_backend", self.route_backend.clone())]
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_string(), text_value(v?))))
                .collect();
        let kept = Value { kind: Some(value::Kind::StructValue(Struct { fields: kept })) };
        ProcessingResponse {
            response: Some(Out::RequestBody(BodyResponse {
                response: Some(CommonResponse {
                    header_mutation,
                    body_mutation: Some(EnvoyBodyMutation {
                        mutation: Some(body_mutation::Mutation::Body(body)),
                    }),
                    ..Default::default()
                }),
            })),
            // For a retry of this request, which will find the internal headers gone.
            dynamic_metadata: Some(Struct {
                fields: [(ATTEMPT_METADATA_NAMESPACE.to_string(), kept)].into(),
            }),
            ..Default::default()
        }
    }

    /// Header operations in order, later ones winning: `base`, the backend's mutation, the
    /// backendRef's, the credential; then every internal header removed. `None` removes.
    fn header_ops(
        &self,
        backend: Option<&BackendRuntime>,
        route: Option<&RouteBackendRuntime>,
        base: Vec<(String, Option<String>)>,
    ) -> BTreeMap<String, Option<String>> {
        let mut ops: BTreeMap<String, Option<String>> = BTreeMap::new();
        // Compressed responses could not be translated or counted.
        ops.insert("accept-encoding".into(), None);
        if let Some(host) = backend.and_then(|b| b.hostname.as_ref()) {
            ops.insert(":authority".into(), Some(host.clone()));
        }
        ops.extend(base);
        let user = [
            backend.and_then(|b| b.header_mutation.as_ref()),
            route.and_then(|r| r.header_mutation.as_ref()),
        ];
        for m in user.into_iter().flatten() {
            apply_header_mutation(&mut ops, m);
        }
        if let Some(backend) = backend {
            let has_version = find(&self.headers, "anthropic-version").is_some();
            if let Some(credential) = &backend.credential {
                for name in CLIENT_AUTH_HEADERS {
                    ops.insert(name.into(), None);
                }
                for (name, value) in credential.headers(has_version) {
                    ops.insert(name.into(), Some(value));
                }
            }
            if backend.schema.name == APISchema::Anthropic && !has_version {
                ops.entry("anthropic-version".into())
                    .or_insert_with(|| Some(super::runtime::ANTHROPIC_VERSION.into()));
            }
        }
        for (name, _) in &self.headers {
            if name.starts_with(INTERNAL_HEADER_PREFIX) {
                ops.insert(name.clone(), None);
            }
        }
        ops
    }

    /// The mutation for `ops`, removing only headers the request has.
    fn header_mutation(&self, ops: BTreeMap<String, Option<String>>) -> Option<HeaderMutation> {
        let mut set = Vec::new();
        let mut remove = Vec::new();
        for (name, op) in ops {
            match op {
                Some(value) => set.push((name, value)),
                None if find(&self.headers, &name).is_some() => remove.push(name),
                None => {}
            }
        }
        mutation(set, remove)
    }

    fn on_response_headers(&mut self, message: &HttpHeaders) -> HeadersResponse {
        let Some(state) = &mut self.response else { return HeadersResponse::default() };
        let headers = header_pairs(message);
        state.status = find(&headers, ":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        let content_type = if (200..300).contains(&state.status) {
            state.translator.content_type()
        } else {
            "application/json"
        };
        let set = vec![("content-type".to_string(), content_type.to_string())];
        // The body changes length as it is translated; Envoy frames it anew.
        let remove = if find(&headers, "content-length").is_some() {
            vec!["content-length".to_string()]
        } else {
            Vec::new()
        };
        HeadersResponse {
            response: Some(CommonResponse {
                header_mutation: mutation(set, remove),
                ..Default::default()
            }),
        }
    }

    fn on_response_body(&mut self, chunk: &[u8], end_of_stream: bool) -> ProcessingResponse {
        let Some(state) = &mut self.response else {
            return ProcessingResponse {
                response: Some(Out::ResponseBody(BodyResponse::default())),
                ..Default::default()
            };
        };
        let ok = (200..300).contains(&state.status);
        let out = if !ok {
            let room = MAX_ERROR_BODY.saturating_sub(state.error_body.len());
            state.error_body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if end_of_stream {
                translate_error(state.client, state.backend, state.status, &state.error_body)
            } else {
                Vec::new()
            }
        } else if state.failed {
            Vec::new()
        } else {
            match state.translator.feed(chunk, end_of_stream) {
                Ok(out) => {
                    if state.translator.truncated() {
                        tracing::warn!(backend = %self.cluster, "the upstream's stream ended before the response was complete");
                    }
                    out
                }
                Err(e) => {
                    tracing::warn!(backend = %self.cluster, "response not translated: {e}");
                    state.failed = true;
                    // Now, not at the end: a stream may go on for long after it went wrong.
                    state.translator.failure(&e.to_string())
                }
            }
        };
        let dynamic_metadata = (end_of_stream && ok)
            .then(|| usage_metadata(&state.costs, state.translator.usage()))
            .flatten();
        if end_of_stream {
            tracing::debug!(backend = %self.cluster, status = state.status, usage = ?state.translator.usage(), "response done");
        }
        ProcessingResponse {
            response: Some(Out::ResponseBody(BodyResponse {
                response: Some(CommonResponse {
                    body_mutation: Some(EnvoyBodyMutation {
                        mutation: Some(body_mutation::Mutation::Body(out)),
                    }),
                    ..Default::default()
                }),
            })),
            dynamic_metadata,
            ..Default::default()
        }
    }
}

fn text(s: &Struct, key: &str) -> Option<String> {
    match &s.fields.get(key)?.kind {
        Some(value::Kind::StringValue(v)) => Some(v.clone()),
        _ => None,
    }
}

fn text_value(s: String) -> Value {
    Value { kind: Some(value::Kind::StringValue(s)) }
}

fn apply_header_mutation(ops: &mut BTreeMap<String, Option<String>>, m: &ApiHeaderMutation) {
    for h in &m.set {
        ops.insert(h.name.to_ascii_lowercase(), Some(h.value.clone()));
    }
    for name in &m.remove {
        ops.insert(name.to_ascii_lowercase(), None);
    }
}

/// Applies top-level field mutations in order. A value that is not JSON is set as a string; a
/// body that is not a JSON object is left alone.
fn mutate_body<'a>(body: Vec<u8>, mutations: impl Iterator<Item = &'a BodyMutation>) -> Vec<u8> {
    let mut mutations = mutations.peekable();
    if mutations.peek().is_none() {
        return body;
    }
    let Ok(mut object) = serde_json::from_slice::<Map<String, serde_json::Value>>(&body) else {
        return body;
    };
    for m in mutations {
        for field in &m.set {
            let value = serde_json::from_str(&field.value)
                .unwrap_or_else(|_| serde_json::Value::String(field.value.clone()));
            object.insert(field.path.clone(), value);
        }
        for path in &m.remove {
            object.remove(path);
        }
    }
    serde_json::to_vec(&object).unwrap_or(body)
}

/// The route's request costs as `io.envoy.ai_gateway` dynamic metadata; `None` without costs.
fn usage_metadata(costs: &[LLMRequestCost], usage: Usage) -> Option<Struct> {
    let mut fields = std::collections::HashMap::new();
    for cost in costs {
        let n = match cost.cost_type {
            LLMRequestCostType::InputToken => usage.input,
            LLMRequestCostType::CachedInputToken => usage.cached_input,
            LLMRequestCostType::OutputToken => usage.output,
            LLMRequestCostType::TotalToken => usage.total,
            LLMRequestCostType::Cel => {
                tracing::warn!(key = %cost.metadata_key, "CEL request costs are not supported yet");
                continue;
            }
        };
        fields.insert(
            cost.metadata_key.clone(),
            Value { kind: Some(value::Kind::NumberValue(n as f64)) },
        );
    }
    if fields.is_empty() {
        return None;
    }
    let namespace = Value { kind: Some(value::Kind::StructValue(Struct { fields })) };
    Some(Struct { fields: [(METADATA_NAMESPACE.to_string(), namespace)].into() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BodyField;

    #[test]
    fn body_mutations_apply_in_order_and_keep_non_json_values_as_text() {
        let backend = BodyMutation {
            set: vec![
                BodyField { path: "temperature".into(), value: "0.1".into() },
                BodyField { path: "tag".into(), value: "plain text".into() },
            ],
            remove: vec!["seed".into()],
        };
        let route = BodyMutation {
            set: vec![BodyField { path: "temperature".into(), value: "0.7".into() }],
            remove: Vec::new(),
        };
        let body = br#"{"model":"m","seed":1}"#.to_vec();
        let out = mutate_body(body, [&backend, &route].into_iter());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, serde_json::json!({"model": "m", "temperature": 0.7, "tag": "plain text"}));
        assert_eq!(mutate_body(b"[1]".to_vec(), [&backend].into_iter()), b"[1]");
    }

    #[test]
    fn usage_metadata_only_for_configured_costs() {
        let usage = Usage { input: 10, output: 5, cached_input: 2, total: 15 };
        assert_eq!(usage_metadata(&[], usage), None);
        let cost = |key: &str, cost_type| LLMRequestCost {
            metadata_key: key.into(),
            cost_type,
            cel: None,
        };
        let costs = [
            cost("cached", LLMRequestCostType::CachedInputToken),
            cost("total", LLMRequestCostType::TotalToken),
        ];
        let metadata = usage_metadata(&costs, usage).unwrap();
        let Some(value::Kind::StructValue(s)) = &metadata.fields[METADATA_NAMESPACE].kind else {
            panic!("{metadata:?}")
        };
        let n = |k: &str| s.fields[k].kind.clone();
        assert_eq!(n("cached"), Some(value::Kind::NumberValue(2.0)));
        assert_eq!(n("total"), Some(value::Kind::NumberValue(15.0)));
    }
}
