//! The gRPC edge: one `ExternalProcessor` for both phases, and the ext_proc message helpers the
//! phases share.
//!
//! Each stream is one HTTP request in one phase, told apart by the gRPC metadata the filters
//! send ([`BACKEND_METADATA`] for the upstream phase, [`PHASE_METADATA`] for the pool phase). A phase is a synchronous state machine from one
//! `ProcessingRequest` to one `ProcessingResponse`; this module only moves messages between it
//! and the stream, so the phases are tested without gRPC.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option,
};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    HeaderMutation, HttpHeaders, ImmediateResponse, ProcessingRequest, ProcessingResponse,
    processing_response,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::credentials::CredentialOptions;
use super::metrics::GenAiMetrics;
use super::pool::PoolPhase;
use super::router::RouterPhase;
use super::runtime::SharedRuntime;
use super::upstream::UpstreamPhase;
use crate::wire::{BACKEND_METADATA, PHASE_METADATA, POOL_HTTP_PHASE, POOL_PHASE};

/// Settings of the service that are not in any object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtProcOptions {
    /// Request bodies larger than this are refused with 413, in the client's format.
    pub max_body_bytes: usize,
    /// Where cloud credentials get their tokens.
    pub credentials: CredentialOptions,
}

/// The default of [`ExtProcOptions::max_body_bytes`].
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

impl Default for ExtProcOptions {
    fn default() -> Self {
        ExtProcOptions {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            credentials: CredentialOptions::default(),
        }
    }
}

/// The translation ext_proc service.
#[derive(Clone)]
pub struct ExtProcService {
    runtime: SharedRuntime,
    options: ExtProcOptions,
    metrics: Arc<GenAiMetrics>,
}

impl ExtProcService {
    pub fn new(runtime: SharedRuntime, options: ExtProcOptions) -> Self {
        ExtProcService { runtime, options, metrics: Arc::default() }
    }

    /// The GenAI metrics the upstream phase records, for the admin server's `/metrics`.
    pub fn metrics(&self) -> Arc<GenAiMetrics> {
        self.metrics.clone()
    }

    /// The tonic service, accepting messages large enough for a body at the configured limit.
    pub fn into_service(self) -> ExternalProcessorServer<Self> {
        // Over the body limit, so that an oversized body gets the client's 413 rather than a
        // gRPC error; Envoy's own buffer limit caps what it sends anyway.
        let max_message = self.options.max_body_bytes.saturating_mul(2).max(4 * 1024 * 1024);
        ExternalProcessorServer::new(self)
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message)
    }
}

/// One phase of one request.
pub(super) enum Phase {
    Router(RouterPhase),
    Pool(Box<PoolPhase>),
    Upstream(Box<UpstreamPhase>),
}

impl Phase {
    /// The index of this phase in [`super::metrics::PHASES`].
    fn index(&self) -> usize {
        match self {
            Phase::Router(_) => 0,
            Phase::Pool(_) => 1,
            Phase::Upstream(_) => 2,
        }
    }

    fn on_message(&mut self, request: ProcessingRequest) -> Result<ProcessingResponse, Status> {
        match self {
            Phase::Router(p) => p.on_message(request),
            Phase::Pool(p) => p.on_message(request),
            Phase::Upstream(p) => p.on_message(request),
        }
    }
}

type ProcessStream = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for ExtProcService {
    type ProcessStream = ProcessStream;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<ProcessStream>, Status> {
        // One snapshot per request: a config change mid-request does not mix two configs.
        let runtime = self.runtime.load_full();
        let phase = match request.metadata().get(BACKEND_METADATA) {
            Some(cluster) => {
                let cluster = cluster.to_str().map_err(|_| {
                    Status::invalid_argument(format!("{BACKEND_METADATA} is not text"))
                })?;
                let metrics = self.metrics.clone();
                Phase::Upstream(Box::new(UpstreamPhase::new(runtime, metrics, cluster.to_string())))
            }
            None if request.metadata().get(PHASE_METADATA).is_some_and(|p| p == POOL_PHASE) => {
                Phase::Pool(Box::default())
            }
            None if request
                .metadata()
                .get(PHASE_METADATA)
                .is_some_and(|p| p == POOL_HTTP_PHASE) =>
            {
                Phase::Pool(Box::new(PoolPhase::for_http_route()))
            }
            None => Phase::Router(RouterPhase::new(runtime, self.options.max_body_bytes)),
        };
        let metrics = self.metrics.clone();
        let stream = PhaseStream { inbound: request.into_inner(), phase, metrics, done: false };
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The responses of one stream, each computed when the connection polls for it: a phase answers
/// synchronously, so a task and a channel per stream would only add two wake-ups per message.
struct PhaseStream {
    inbound: Streaming<ProcessingRequest>,
    phase: Phase,
    metrics: Arc<GenAiMetrics>,
    /// The phase failed or Envoy's side ended: nothing more is read.
    done: bool,
}

impl Stream for PhaseStream {
    type Item = Result<ProcessingResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        let message = match ready!(Pin::new(&mut this.inbound).poll_next(cx)) {
            Some(Ok(message)) => message,
            // Envoy closed the stream: the request is done.
            None => {
                this.done = true;
                return Poll::Ready(None);
            }
            Some(Err(status)) => {
                tracing::debug!("ext_proc stream ended: {status}");
                this.done = true;
                return Poll::Ready(None);
            }
        };
        if let Some(kind) = kind(&message) {
            this.metrics.message(this.phase.index(), kind);
        }
        let response = this.phase.on_message(message);
        if let Err(status) = &response {
            tracing::warn!("ext_proc: {}", status.message());
            this.done = true;
        }
        Poll::Ready(Some(response))
    }
}

/// The value of a header as Envoy sends it (`raw_value`, or `value` from older Envoys).
pub(super) fn header_text(h: &HeaderValue) -> String {
    if h.raw_value.is_empty() {
        h.value.clone()
    } else {
        String::from_utf8_lossy(&h.raw_value).into_owned()
    }
}

/// The headers of a message as (lowercase name, value) pairs.
pub(super) fn header_pairs(headers: &HttpHeaders) -> Vec<(String, String)> {
    headers
        .headers
        .iter()
        .flat_map(|m| &m.headers)
        .map(|h| (h.key.to_ascii_lowercase(), header_text(h)))
        .collect()
}

pub(super) fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Sets (replacing any value) `name: value`.
pub(super) fn set_header(name: &str, value: impl Into<String>) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_string(),
            raw_value: value.into().into_bytes(),
            ..Default::default()
        }),
        append_action: header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

pub(super) fn mutation(set: Vec<(String, String)>, remove: Vec<String>) -> Option<HeaderMutation> {
    if set.is_empty() && remove.is_empty() {
        return None;
    }
    Some(HeaderMutation {
        set_headers: set.into_iter().map(|(k, v)| set_header(&k, v)).collect(),
        remove_headers: remove,
    })
}

/// A response Envoy sends to the client in place of the request, as JSON.
pub(super) fn immediate(status: u16, body: Vec<u8>, details: &str) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(processing_response::Response::ImmediateResponse(ImmediateResponse {
            status: Some(HttpStatus { code: i32::from(status) }),
            headers: Some(HeaderMutation {
                set_headers: vec![set_header("content-type", "application/json")],
                ..Default::default()
            }),
            body,
            details: details.to_string(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The index of a message's kind in [`super::metrics::MESSAGES`].
fn kind(request: &ProcessingRequest) -> Option<usize> {
    use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as R;
    Some(match request.request.as_ref()? {
        R::RequestHeaders(_) => 0,
        R::RequestBody(_) => 1,
        R::RequestTrailers(_) => 2,
        R::ResponseHeaders(_) => 3,
        R::ResponseBody(_) => 4,
        R::ResponseTrailers(_) => 5,
    })
}

/// The message Envoy sent, for errors about unexpected ones.
pub(super) fn describe(request: &ProcessingRequest) -> &'static str {
    use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as R;
    match &request.request {
        Some(R::RequestHeaders(_)) => "request headers",
        Some(R::ResponseHeaders(_)) => "response headers",
        Some(R::RequestBody(_)) => "request body",
        Some(R::ResponseBody(_)) => "response body",
        Some(R::RequestTrailers(_)) => "request trailers",
        Some(R::ResponseTrailers(_)) => "response trailers",
        None => "an empty message",
    }
}
