//! An in-process stand-in for the Gateway API Inference Extension's reference endpoint picker
//! (`lwepp`), as its gateway conformance tests rely on it: a gRPC `ExternalProcessor` over h2c
//! that picks round robin among a pool's endpoints, narrowed by the `test-epp-endpoint-selection`
//! request header or else by Envoy's subset hint, plus the gRPC health service.
//!
//! It answers Envoy's picker filter (`aixds::compile::picker::picker_filter`) the way aixds's
//! own picker does: in `FULL_DUPLEX_STREAMED` request body mode it holds the request headers
//! response until the body is complete, then releases the headers response (the pick), the
//! body as streamed body responses (Envoy forwards only what comes back), and the trailers
//! response if the request has trailers.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use envoy_types::pb::envoy::config::core::v3::{
    HeaderMap, HeaderValue, HeaderValueOption, Metadata, header_value_option,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as In;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Out;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    CommonResponse, HeaderMutation, HeadersResponse, ProcessingRequest, ProcessingResponse,
    TrailersResponse,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value};
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;
use tonic::service::Routes;
use tonic::{Request, Response, Status, Streaming};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use aixds::picker::{body_response, released_body};

use super::ServerTask;

/// The request header naming the endpoints a request may go to: `ip` or `ip:port`, comma
/// separated.
pub const SELECTION_HEADER: &str = "test-epp-endpoint-selection";
/// The request header (and `envoy.lb` key) carrying the pick.
pub const DESTINATION_ENDPOINT: &str = "x-gateway-destination-endpoint";
/// The response header telling the client which endpoint served the request.
pub const SERVED_HEADER: &str = "x-conformance-test-served-endpoint";
/// The response header marking that the picker saw the response headers.
pub const RESPONSE_HEADERS_SEEN: &str = "x-went-into-resp-headers";
/// The gRPC health service names the picker reports SERVING (Envoy checks the first).
pub const HEALTH_SERVICES: [&str; 4] =
    ["envoy.service.ext_proc.v3.ExternalProcessor", "liveness", "readiness", ""];

const LB_NAMESPACE: &str = "envoy.lb";
const SERVED_ENDPOINT: &str = "x-gateway-destination-endpoint-served";
const SUBSET_NAMESPACE: &str = "envoy.lb.subset_hint";
const SUBSET_KEY: &str = "x-gateway-destination-endpoint-subset";
/// The echo server sets the `name:value` pairs of this request header on its response.
const ECHO_SET_HEADER: &str = "x-echo-set-header";

/// A running stand-in for an InferencePool's `lwepp` picker; stopped when dropped.
pub struct Epp {
    addr: SocketAddr,
    pool: Arc<Pool>,
    health: HealthReporter,
    task: ServerTask,
}

/// The pool's endpoints and what has been picked.
struct Pool {
    endpoints: Vec<SocketAddr>,
    /// The round robin's position, shared by all streams.
    next: AtomicUsize,
    picked: Mutex<Vec<SocketAddr>>,
}

impl Epp {
    /// Serves gRPC (h2c) on `addr` (a loopback address; port 0 picks a free port, see
    /// [`Epp::addr`]) for a pool of `endpoints` (pod IP × target port). Panics when `addr`
    /// cannot be bound.
    pub async fn start(addr: SocketAddr, endpoints: Vec<SocketAddr>) -> Epp {
        let listener =
            TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("picker on {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let pool =
            Arc::new(Pool { endpoints, next: AtomicUsize::new(0), picked: Mutex::default() });
        let (health, health_service) = tonic_health::server::health_reporter();
        for name in HEALTH_SERVICES {
            health.set_service_status(name, ServingStatus::Serving).await;
        }
        let routes = Routes::new(ExternalProcessorServer::new(Picker { pool: pool.clone() }))
            .add_service(health_service)
            .prepare();
        let task = ServerTask::spawn(listener, move |stream| connection(stream, routes.clone()));
        Epp { addr, pool, health, task }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many picks it has made, over all streams.
    pub fn picks(&self) -> usize {
        self.pool.picked.lock().unwrap().len()
    }

    /// The endpoints it has picked, in order.
    pub fn picked(&self) -> Vec<SocketAddr> {
        self.pool.picked.lock().unwrap().clone()
    }

    /// Reports every health service SERVING, or NOT_SERVING (the picker keeps answering).
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        for name in HEALTH_SERVICES {
            self.health.set_service_status(name, status).await;
        }
    }

    /// Stops serving: the port closes (connections are refused) and open connections and
    /// streams are dropped, at the runtime's next turn; [`Epp::stop_and_wait`] waits for it.
    pub fn stop(&mut self) {
        self.task.stop();
    }

    /// Stops serving and waits until the port is closed and every connection dropped.
    pub async fn stop_and_wait(&mut self) {
        self.task.stop_and_wait().await;
    }
}

/// One h2c connection, owned by the server's task so that stopping it drops the connection.
async fn connection(stream: TcpStream, routes: Routes) {
    let _ = http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(routes))
        .await;
}

struct Picker {
    pool: Arc<Pool>,
}

#[tonic::async_trait]
impl ExternalProcessor for Picker {
    type ProcessStream = Answers;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Answers>, Status> {
        Ok(Response::new(Answers {
            inbound: request.into_inner(),
            exchange: Exchange::new(self.pool.clone()),
            pending: VecDeque::new(),
            done: false,
        }))
    }
}

/// The responses of one stream, made as Envoy's messages arrive; the stream lives (and dies)
/// with its connection.
struct Answers {
    inbound: Streaming<ProcessingRequest>,
    exchange: Exchange,
    pending: VecDeque<ProcessingResponse>,
    done: bool,
}

impl Stream for Answers {
    type Item = Result<ProcessingResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(response) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(response)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inbound).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                // Envoy is done with the request, or gone.
                Poll::Ready(None | Some(Err(_))) => this.done = true,
                Poll::Ready(Some(Ok(message))) => match this.exchange.on_message(message) {
                    Ok(responses) => this.pending.extend(responses),
                    Err(status) => {
                        this.done = true;
                        return Poll::Ready(Some(Err(status)));
                    }
                },
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the request headers.
    Start,
    /// Holding the request headers response until the body is complete.
    Buffering,
    /// Picked: the rest of the request and the response pass through.
    Picked,
}

/// One HTTP request's exchange with Envoy.
struct Exchange {
    pool: Arc<Pool>,
    full_duplex_request: bool,
    full_duplex_response: bool,
    phase: Phase,
    /// The endpoints this request may go to.
    candidates: Vec<SocketAddr>,
    body: Vec<u8>,
}

impl Exchange {
    fn new(pool: Arc<Pool>) -> Exchange {
        Exchange {
            pool,
            // What the picker filter asks for; Envoy says so in its first message.
            full_duplex_request: true,
            full_duplex_response: false,
            phase: Phase::Start,
            candidates: Vec::new(),
            body: Vec::new(),
        }
    }

    fn on_message(
        &mut self,
        message: ProcessingRequest,
    ) -> Result<Vec<ProcessingResponse>, Status> {
        if let Some(config) = &message.protocol_config {
            self.full_duplex_request =
                config.request_body_mode == BodySendMode::FullDuplexStreamed as i32;
            self.full_duplex_response =
                config.response_body_mode == BodySendMode::FullDuplexStreamed as i32;
        }
        let metadata = message.metadata_context.as_ref();
        match (self.phase, message.request) {
            (Phase::Start, Some(In::RequestHeaders(headers))) => {
                self.candidates =
                    candidates(&self.pool.endpoints, headers.headers.as_ref(), metadata)?;
                if headers.end_of_stream || !self.full_duplex_request {
                    return Ok(vec![self.pick()?]);
                }
                self.phase = Phase::Buffering;
                Ok(Vec::new())
            }
            (Phase::Buffering, Some(In::RequestBody(body))) => {
                self.body.extend_from_slice(&body.body);
                if body.end_of_stream { self.release(true) } else { Ok(Vec::new()) }
            }
            (Phase::Buffering, Some(In::RequestTrailers(_))) => {
                // The trailers end the body; its last chunk goes back without the end.
                let mut out = self.release(false)?;
                out.push(trailers_response(true));
                Ok(out)
            }
            (Phase::Picked, Some(In::RequestBody(body))) => Ok(vec![body_response(
                true,
                self.full_duplex_request,
                body.body,
                body.end_of_stream,
            )]),
            (Phase::Picked, Some(In::RequestTrailers(_))) => Ok(vec![trailers_response(true)]),
            (Phase::Picked, Some(In::ResponseHeaders(_))) => {
                let served = served_endpoint(metadata);
                let set = vec![
                    set_header(SERVED_HEADER, &served),
                    set_header(RESPONSE_HEADERS_SEEN, "true"),
                ];
                Ok(vec![headers_response(
                    false,
                    CommonResponse {
                        header_mutation: Some(HeaderMutation {
                            set_headers: set,
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    None,
                )])
            }
            (Phase::Picked, Some(In::ResponseBody(body))) => Ok(vec![body_response(
                false,
                self.full_duplex_response,
                body.body,
                body.end_of_stream,
            )]),
            (Phase::Picked, Some(In::ResponseTrailers(_))) => Ok(vec![trailers_response(false)]),
            (phase, request) => Err(Status::failed_precondition(format!(
                "test picker: unexpected {} in phase {phase:?}",
                describe(request.as_ref())
            ))),
        }
    }

    /// Picks, then releases the held body: the headers response, then the body, its last chunk
    /// marked `end_of_stream` if asked.
    fn release(&mut self, end_of_stream: bool) -> Result<Vec<ProcessingResponse>, Status> {
        let mut headers = self.pick()?;
        let body = std::mem::take(&mut self.body);
        // Envoy drops the length of a body it streams to the processor; the whole body is known
        // here, so the upstream gets it with its length rather than chunked.
        if let Some(Out::RequestHeaders(h)) = &mut headers.response
            && let Some(mutation) = h.response.as_mut().and_then(|c| c.header_mutation.as_mut())
        {
            mutation.set_headers.push(set_header("content-length", &body.len().to_string()));
        }
        let mut out = vec![headers];
        out.extend(released_body(&body, end_of_stream));
        Ok(out)
    }

    /// The next candidate in round robin, as the request headers response; an error ending the
    /// stream when there is none (as `lwepp` does).
    fn pick(&mut self) -> Result<ProcessingResponse, Status> {
        if self.candidates.is_empty() {
            return Err(Status::unavailable("test picker: no candidate endpoint for the request"));
        }
        let turn = self.pool.next.fetch_add(1, Ordering::SeqCst);
        let endpoint = self.candidates[turn % self.candidates.len()];
        self.pool.picked.lock().unwrap().push(endpoint);
        self.phase = Phase::Picked;
        let endpoint = endpoint.to_string();
        let set_headers = vec![
            set_header(DESTINATION_ENDPOINT, &endpoint),
            // The echo server reports the pick in the response, overriding a client's value.
            set_header(ECHO_SET_HEADER, &format!("{SERVED_HEADER}:{endpoint}")),
        ];
        let metadata = Struct {
            fields: [(
                LB_NAMESPACE.to_string(),
                Value {
                    kind: Some(value::Kind::StructValue(Struct {
                        fields: [(DESTINATION_ENDPOINT.to_string(), string_value(&endpoint))]
                            .into(),
                    })),
                },
            )]
            .into(),
        };
        let common = CommonResponse {
            clear_route_cache: true,
            header_mutation: Some(HeaderMutation { set_headers, ..Default::default() }),
            ..Default::default()
        };
        Ok(headers_response(true, common, Some(metadata)))
    }
}

/// The pool endpoints a request may go to: those the selection header names if it names any,
/// else those of Envoy's subset hint if there is one, else all.
fn candidates(
    all: &[SocketAddr],
    headers: Option<&HeaderMap>,
    metadata: Option<&Metadata>,
) -> Result<Vec<SocketAddr>, Status> {
    let selection: Vec<String> = headers
        .map(|h| h.headers.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|h| h.key.eq_ignore_ascii_case(SELECTION_HEADER))
        .flat_map(|h| tokens(&header_value(h)))
        .collect();
    if !selection.is_empty() {
        return Ok(matching(all, &selection));
    }
    let hint = metadata
        .and_then(|m| m.filter_metadata.get(SUBSET_NAMESPACE))
        .and_then(|s| s.fields.get(SUBSET_KEY));
    let Some(hint) = hint else { return Ok(all.to_vec()) };
    let bad = || {
        Status::invalid_argument(format!(
            "{SUBSET_NAMESPACE}/{SUBSET_KEY} is not a list of ip:port"
        ))
    };
    let allowed: Vec<String> = match &hint.kind {
        Some(value::Kind::StringValue(s)) => tokens(s),
        Some(value::Kind::ListValue(list)) => {
            let mut allowed = Vec::new();
            for v in &list.values {
                let Some(value::Kind::StringValue(s)) = &v.kind else { return Err(bad()) };
                allowed.extend(tokens(s));
            }
            allowed
        }
        _ => return Err(bad()),
    };
    Ok(matching(all, &allowed))
}

fn tokens(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect()
}

/// The endpoints of `all` one of `tokens` names: `ip:port` that endpoint, `ip` any port of it.
fn matching(all: &[SocketAddr], tokens: &[String]) -> Vec<SocketAddr> {
    all.iter()
        .filter(|e| {
            tokens.iter().any(|t| {
                t.parse::<SocketAddr>().is_ok_and(|s| s == **e)
                    || t.trim_matches(['[', ']']).parse::<IpAddr>().is_ok_and(|ip| ip == e.ip())
            })
        })
        .copied()
        .collect()
}

fn header_value(h: &HeaderValue) -> String {
    if h.raw_value.is_empty() {
        h.value.clone()
    } else {
        String::from_utf8_lossy(&h.raw_value).into()
    }
}

/// `envoy.lb` / `x-gateway-destination-endpoint-served` as Envoy's load balancer wrote it, or
/// what is missing, in `lwepp`'s words.
fn served_endpoint(metadata: Option<&Metadata>) -> String {
    let Some(lb) = metadata.and_then(|m| m.filter_metadata.get(LB_NAMESPACE)) else {
        return "fail: missing envoy lb metadata".into();
    };
    match lb.fields.get(SERVED_ENDPOINT).and_then(|v| v.kind.as_ref()) {
        Some(value::Kind::StringValue(s)) => s.clone(),
        _ => "fail: missing destination endpoint served metadata".into(),
    }
}

fn string_value(s: &str) -> Value {
    Value { kind: Some(value::Kind::StringValue(s.to_string())) }
}

fn set_header(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_string(),
            raw_value: value.as_bytes().to_vec(),
            ..Default::default()
        }),
        append_action: header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn headers_response(
    request: bool,
    common: CommonResponse,
    dynamic_metadata: Option<Struct>,
) -> ProcessingResponse {
    let headers = HeadersResponse { response: Some(common) };
    ProcessingResponse {
        response: Some(if request {
            Out::RequestHeaders(headers)
        } else {
            Out::ResponseHeaders(headers)
        }),
        dynamic_metadata,
        ..Default::default()
    }
}

fn trailers_response(request: bool) -> ProcessingResponse {
    let trailers = TrailersResponse::default();
    ProcessingResponse {
        response: Some(if request {
            Out::RequestTrailers(trailers)
        } else {
            Out::ResponseTrailers(trailers)
        }),
        ..Default::default()
    }
}

fn describe(request: Option<&In>) -> &'static str {
    match request {
        Some(In::RequestHeaders(_)) => "request headers",
        Some(In::RequestBody(_)) => "request body",
        Some(In::RequestTrailers(_)) => "request trailers",
        Some(In::ResponseHeaders(_)) => "response headers",
        Some(In::ResponseBody(_)) => "response body",
        Some(In::ResponseTrailers(_)) => "response trailers",
        None => "empty message",
    }
}
