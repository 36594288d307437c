//! The pool phase: for routes to an InferencePool, between the router phase and the pool's
//! endpoint picker, make an Anthropic request one the picker can read.
//!
//! Takes: the request headers (with the router phase's internal headers) and the whole body,
//! then the response headers and body as they stream. Gives: for `/v1/messages`, the body and
//! `:path` translated to OpenAI chat completions and [`ENDPOINT_HEADER`] moved along with them,
//! so that the picker parses an OpenAI body and the upstream phase translates from OpenAI for
//! the backend; then the response translated back to Anthropic's format for the client, chunk
//! by chunk. Every other request passes untouched: its first answer turns the rest of this
//! stream off (`mode_override`).
//!
//! Endpoint pickers of the Gateway API Inference Extension parse OpenAI bodies only; without
//! this phase an Anthropic client could not reach a pool. The phase keeps nothing beyond one
//! request, and what the later phases need travels in the request's headers as usual.

use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::{
    ProcessingMode, processing_mode,
};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as In;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Out;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeadersResponse, HttpHeaders, ProcessingRequest,
    ProcessingResponse, TrailersResponse, body_mutation,
};
use tonic::Status;

use super::endpoint_path;
use super::response::ResponseTranslation;
use super::service::{describe, find, header_pairs, immediate, mutation};
use super::translate::{
    ClientSchema, Endpoint, Target, error_body, parse_request, response_translator,
    translate_request,
};
use crate::api::{APISchema, VersionedAPISchema};
use crate::wire::ENDPOINT_HEADER;

#[derive(Default)]
pub(super) struct PoolPhase {
    /// Set once an Anthropic request was translated.
    response: Option<ResponseTranslation>,
    /// On an HTTPRoute's route: no router phase ran, so the API is the path's, and no
    /// internal header is set (no upstream phase would take it off).
    http_route: bool,
}

impl PoolPhase {
    pub(super) fn for_http_route() -> Self {
        PoolPhase { http_route: true, ..Default::default() }
    }

    pub(super) fn on_message(
        &mut self,
        request: ProcessingRequest,
    ) -> Result<ProcessingResponse, Status> {
        let response = match request.request {
            Some(In::RequestHeaders(headers)) => return Ok(self.on_request_headers(&headers)),
            Some(In::RequestBody(body)) => return Ok(self.on_request_body(&body.body)),
            Some(In::ResponseHeaders(headers)) => {
                let header_mutation = self.response.as_mut().and_then(|r| r.on_headers(&headers));
                Out::ResponseHeaders(HeadersResponse {
                    response: Some(CommonResponse { header_mutation, ..Default::default() }),
                })
            }
            Some(In::ResponseBody(body)) => {
                let out = match &mut self.response {
                    Some(r) => r.on_body(&body.body, body.end_of_stream, "pool phase"),
                    None => body.body,
                };
                Out::ResponseBody(BodyResponse {
                    response: Some(CommonResponse {
                        body_mutation: Some(BodyMutation {
                            mutation: Some(body_mutation::Mutation::Body(out)),
                        }),
                        ..Default::default()
                    }),
                })
            }
            Some(In::RequestTrailers(_)) => Out::RequestTrailers(TrailersResponse::default()),
            Some(In::ResponseTrailers(_)) => Out::ResponseTrailers(TrailersResponse::default()),
            None => {
                return Err(Status::invalid_argument(format!(
                    "pool phase: unexpected {}",
                    describe(&request)
                )));
            }
        };
        Ok(ProcessingResponse { response: Some(response), ..Default::default() })
    }

    fn on_request_headers(&mut self, message: &HttpHeaders) -> ProcessingResponse {
        let headers = header_pairs(message);
        let endpoint = match self.http_route {
            true => find(&headers, ":path").and_then(Endpoint::from_path),
            false => find(&headers, ENDPOINT_HEADER).and_then(Endpoint::from_path),
        };
        let mode_override = if endpoint == Some(Endpoint::Messages) && !message.end_of_stream {
            None
        } else {
            // Already OpenAI (or nothing to translate): the rest of the request is not ours.
            Some(ProcessingMode {
                request_body_mode: processing_mode::BodySendMode::None as i32,
                response_header_mode: processing_mode::HeaderSendMode::Skip as i32,
                response_body_mode: processing_mode::BodySendMode::None as i32,
                ..Default::default()
            })
        };
        ProcessingResponse {
            response: Some(Out::RequestHeaders(HeadersResponse::default())),
            mode_override,
            ..Default::default()
        }
    }

    fn on_request_body(&mut self, body: &[u8]) -> ProcessingResponse {
        let openai = VersionedAPISchema { name: APISchema::OpenAI, ..Default::default() };
        let translated = parse_request(Endpoint::Messages, body).and_then(|parsed| {
            let translated = translate_request(&parsed, Target::new(&openai), None)?;
            Ok((parsed, translated))
        });
        let (parsed, translated) = match translated {
            Ok(t) => t,
            Err(e) => {
                let status = e.status();
                let body = error_body(ClientSchema::Anthropic, status, &e.to_string());
                return immediate(status, body, "aixds_translation_failed");
            }
        };
        let mut set = vec![
            (":path".to_string(), translated.path),
            ("content-length".to_string(), translated.body.len().to_string()),
        ];
        if !self.http_route {
            let chat = endpoint_path(Endpoint::ChatCompletions).to_string();
            set.push((ENDPOINT_HEADER.to_string(), chat));
        }
        let translator = response_translator(Endpoint::Messages, APISchema::OpenAI, parsed.stream);
        self.response =
            Some(ResponseTranslation::new(ClientSchema::Anthropic, APISchema::OpenAI, translator));
        ProcessingResponse {
            response: Some(Out::RequestBody(BodyResponse {
                response: Some(CommonResponse {
                    header_mutation: mutation(set, Vec::new()),
                    body_mutation: Some(BodyMutation {
                        mutation: Some(body_mutation::Mutation::Body(translated.body)),
                    }),
                    ..Default::default()
                }),
            })),
            ..Default::default()
        }
    }
}
