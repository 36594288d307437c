//! The router phase: before Envoy picks a route, find the model in the body.
//!
//! Takes: the request headers and the whole request body. Gives: `GET /v1/models` (and
//! Anthropic's and Cohere's model lists) and errors answered directly, in the client's own format (for a path where no API is served, the format
//! of the API the path belongs to); otherwise the model header the routes match on, the routing
//! scope of the model (its own when a route names it exactly), the internal headers the upstream
//! phase reads, the client's API as dynamic metadata for Envoy's own
//! replies, and a cleared route cache; a client's own `x-gateway-destination-endpoint` is
//! removed, as only a pool's endpoint picker may choose.

use std::sync::Arc;

use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as In;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Out;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyResponse, CommonResponse, HeadersResponse, HttpHeaders, ProcessingRequest,
    ProcessingResponse, TrailersResponse,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value};
use serde_json::json;
use tonic::Status;

use super::endpoint_path;
use super::runtime::RuntimeConfig;
use super::service::{describe, find, header_pairs, immediate, mutation};
use super::translate::{ClientSchema, Endpoint, error_body, read_head};
use crate::wire::{
    ATTEMPT_METADATA_NAMESPACE, CLIENT_METADATA_KEY, DEFAULT_SCOPE, ENDPOINT_HEADER,
    NOT_FOUND_ANTHROPIC_BODY, NOT_FOUND_BODY, NOT_FOUND_COHERE_BODY, SCOPE_HEADER, STREAM_HEADER,
    model_scope,
};
use k8s_openapi::jiff::Timestamp;

use crate::api::MODEL_HEADER;
use crate::picker::DESTINATION_ENDPOINT;

/// The longest model name accepted, in bytes. Real names (provider ids, ARNs, fine-tune ids) are
/// far shorter; the name becomes a request header, and a header over Envoy's header size limit
/// would fail the request with an empty 500 instead of the client's 400.
const MAX_MODEL_NAME_BYTES: usize = 1024;

pub(super) struct RouterPhase {
    runtime: Arc<RuntimeConfig>,
    max_body_bytes: usize,
    /// Set once the headers named an endpoint.
    endpoint: Option<Endpoint>,
    /// The client sent the header a pool's endpoint picker answers with: it must not steer.
    client_pick: bool,
}

impl RouterPhase {
    pub(super) fn new(runtime: Arc<RuntimeConfig>, max_body_bytes: usize) -> Self {
        RouterPhase { runtime, max_body_bytes, endpoint: None, client_pick: false }
    }

    pub(super) fn on_message(
        &mut self,
        request: ProcessingRequest,
    ) -> Result<ProcessingResponse, Status> {
        let response = match request.request {
            Some(In::RequestHeaders(headers)) => return Ok(self.on_headers(&headers)),
            Some(In::RequestBody(body)) => return self.on_body(&body.body),
            Some(In::RequestTrailers(_)) => Out::RequestTrailers(TrailersResponse::default()),
            // Not asked for by the compiled config; let them through unchanged.
            Some(In::ResponseHeaders(_)) => Out::ResponseHeaders(HeadersResponse::default()),
            Some(In::ResponseBody(_)) => Out::ResponseBody(BodyResponse::default()),
            Some(In::ResponseTrailers(_)) => Out::ResponseTrailers(TrailersResponse::default()),
            None => {
                return Err(Status::invalid_argument(format!(
                    "router phase: unexpected {}",
                    describe(&request)
                )));
            }
        };
        Ok(ProcessingResponse { response: Some(response), ..Default::default() })
    }

    fn on_headers(&mut self, message: &HttpHeaders) -> ProcessingResponse {
        let headers = header_pairs(message);
        let path = find(&headers, ":path").unwrap_or_default();
        let method = find(&headers, ":method").unwrap_or_default();
        let bare = path.split(['?', '#']).next().unwrap_or_default();
        let bare = bare.trim_end_matches('/');
        // Anthropic's SDK lists models at the same path as OpenAI's, and always sends its
        // version header; `/anthropic/v1/models` is Anthropic's whatever the headers, and
        // `/cohere/v1/models` Cohere's.
        let models = match (bare.strip_prefix("/anthropic"), bare.strip_prefix("/cohere")) {
            (Some(rest), _) => Some((ClientSchema::Anthropic, rest)),
            (_, Some(rest)) => Some((ClientSchema::Cohere, rest)),
            _ if find(&headers, "anthropic-version").is_some() => {
                Some((ClientSchema::Anthropic, bare))
            }
            _ => Some((ClientSchema::OpenAI, bare)),
        }
        .filter(|(_, rest)| *rest == "/v1/models" || rest.starts_with("/v1/models/"));
        if let Some((client, rest)) = models {
            if !matches!(method, "GET" | "HEAD") {
                return method_not_allowed(client, method, path);
            }
            return match rest.strip_prefix("/v1/models/") {
                None => immediate(200, self.models(client), "aixds_models"),
                Some(id) => self.model(client, id),
            };
        }
        let Some(endpoint) = Endpoint::from_path(path) else {
            let message = format!(
                "no LLM API is served at {path:?}; use /v1/chat/completions, /v1/completions, \
                 /v1/embeddings, /v1/responses, /v1/messages, /v1/messages/count_tokens, \
                 /cohere/v2/rerank or /v1/models"
            );
            let body = error_body(ClientSchema::of_path(path), 404, &message);
            return immediate(404, body, "aixds_no_api");
        };
        let client = endpoint.client_schema();
        if method != "POST" {
            return method_not_allowed(client, method, path);
        }
        self.endpoint = Some(endpoint);
        self.client_pick = find(&headers, DESTINATION_ENDPOINT).is_some();
        if message.end_of_stream {
            // No body is coming: the request is as malformed as one with an empty body.
            return self.parse(endpoint, b"");
        }
        ProcessingResponse {
            response: Some(Out::RequestHeaders(HeadersResponse::default())),
            ..Default::default()
        }
    }

    /// Envoy sends a buffered body whole, in one message (trailers may follow).
    fn on_body(&mut self, body: &[u8]) -> Result<ProcessingResponse, Status> {
        let endpoint = self
            .endpoint
            .ok_or_else(|| Status::failed_precondition("router phase: a body before headers"))?;
        Ok(self.parse(endpoint, body))
    }

    fn parse(&self, endpoint: Endpoint, body: &[u8]) -> ProcessingResponse {
        let client = endpoint.client_schema();
        if body.len() > self.max_body_bytes {
            let message = format!(
                "request body is {} bytes, over this gateway's limit of {} bytes",
                body.len(),
                self.max_body_bytes
            );
            return immediate(413, error_body(client, 413, &message), "aixds_body_too_large");
        }
        let parsed = match read_head(endpoint, body) {
            Ok(parsed) => parsed,
            Err(e) => {
                let status = e.status();
                return immediate(
                    status,
                    error_body(client, status, &e.to_string()),
                    "aixds_invalid_request",
                );
            }
        };
        if parsed.model.is_empty() || parsed.model.chars().any(char::is_control) {
            let message = "\"model\" must be a non-empty name without control characters";
            return immediate(400, error_body(client, 400, message), "aixds_invalid_request");
        }
        if parsed.model.len() > MAX_MODEL_NAME_BYTES {
            let message = format!(
                "\"model\" is {} bytes long, over this gateway's limit of {MAX_MODEL_NAME_BYTES} bytes",
                parsed.model.len()
            );
            return immediate(400, error_body(client, 400, &message), "aixds_invalid_request");
        }
        let remove = match self.client_pick {
            true => vec![DESTINATION_ENDPOINT.to_string()],
            false => Vec::new(),
        };
        // The routes naming the model exactly are in its scope (see `compile::route`); the
        // rest in every scope, the default one included.
        let scope = match self.runtime.has_model(&parsed.model) {
            true => model_scope(&parsed.model),
            false => DEFAULT_SCOPE.to_string(),
        };
        let set = vec![
            (SCOPE_HEADER.to_string(), scope),
            (MODEL_HEADER.to_string(), parsed.model),
            (ENDPOINT_HEADER.to_string(), endpoint_path(endpoint).to_string()),
            (STREAM_HEADER.to_string(), parsed.stream.to_string()),
        ];
        ProcessingResponse {
            response: Some(Out::RequestBody(BodyResponse {
                response: Some(CommonResponse {
                    header_mutation: mutation(set, remove),
                    // The route was picked before the model header existed.
                    clear_route_cache: true,
                    ..Default::default()
                }),
            })),
            dynamic_metadata: Some(client_metadata(client)),
            ..Default::default()
        }
    }

    /// The list of every model a route matches exactly, in `client`'s format (Anthropic's and
    /// Cohere's lists are pages: this one is the only page).
    fn models(&self, client: ClientSchema) -> Vec<u8> {
        let data: Vec<serde_json::Value> =
            self.runtime.models().map(|id| self.model_object(client, id)).collect();
        let list = match client {
            ClientSchema::OpenAI => json!({"object": "list", "data": data}),
            ClientSchema::Anthropic => json!({
                "data": data,
                "has_more": false,
                "first_id": self.runtime.models().next(),
                "last_id": self.runtime.models().next_back(),
            }),
            ClientSchema::Cohere => json!({"models": data}),
        };
        list.to_string().into_bytes()
    }

    /// `GET /v1/models/{id}`: one model, or a 404 for a model no route serves.
    fn model(&self, client: ClientSchema, id: &str) -> ProcessingResponse {
        if self.runtime.has_model(id) {
            let body = self.model_object(client, id).to_string().into_bytes();
            return immediate(200, body, "aixds_models");
        }
        let body = match client {
            ClientSchema::OpenAI => NOT_FOUND_BODY.as_bytes().to_vec(),
            ClientSchema::Anthropic => NOT_FOUND_ANTHROPIC_BODY.as_bytes().to_vec(),
            ClientSchema::Cohere => NOT_FOUND_COHERE_BODY.as_bytes().to_vec(),
        };
        immediate(404, body, "aixds_no_model")
    }

    fn model_object(&self, client: ClientSchema, id: &str) -> serde_json::Value {
        match client {
            ClientSchema::OpenAI => json!({
                "id": id,
                "object": "model",
                "created": self.runtime.created,
                "owned_by": "aixds",
            }),
            ClientSchema::Anthropic => {
                let created = i64::try_from(self.runtime.created)
                    .ok()
                    .and_then(|s| Timestamp::from_second(s).ok())
                    .unwrap_or(Timestamp::UNIX_EPOCH);
                json!({
                    "type": "model",
                    "id": id,
                    "display_name": id,
                    "created_at": created.to_string(),
                })
            }
            // Cohere's model objects name what each model serves; aixds cannot tell.
            ClientSchema::Cohere => json!({"name": id}),
        }
    }
}

/// `client` under [`CLIENT_METADATA_KEY`] in [`ATTEMPT_METADATA_NAMESPACE`].
fn client_metadata(client: ClientSchema) -> Struct {
    let text = |s: &str| Value { kind: Some(value::Kind::StringValue(s.into())) };
    let fields = [(CLIENT_METADATA_KEY.to_string(), text(client.name()))].into();
    let namespace = Value { kind: Some(value::Kind::StructValue(Struct { fields })) };
    Struct { fields: [(ATTEMPT_METADATA_NAMESPACE.to_string(), namespace)].into() }
}

fn method_not_allowed(client: ClientSchema, method: &str, path: &str) -> ProcessingResponse {
    let message = format!("method {method} is not allowed on {path}");
    immediate(405, error_body(client, 405, &message), "aixds_method_not_allowed")
}
