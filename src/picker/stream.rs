//! One ext_proc stream, one HTTP request: the endpoint picker protocol as a synchronous state
//! machine from each `ProcessingRequest` to the `ProcessingResponse`s it releases.
//!
//! In `FULL_DUPLEX_STREAMED` request body mode (what the protocol asks for), Envoy sends the
//! request headers and then the body in chunks without waiting, and forwards only what comes
//! back. So the stream answers nothing until the body is complete (or too large to wait for),
//! then picks and releases, in the order Envoy requires: the headers response (carrying the
//! pick as the `x-gateway-destination-endpoint` header and as `envoy.lb` dynamic metadata), the
//! body as it arrived, and the trailers response if the request has trailers. When the request
//! has no body, or Envoy sends it in another mode, the pick is made from the headers alone.
//!
//! On the response headers it reads which endpoint served the request (`envoy.lb` /
//! `x-gateway-destination-endpoint-served`, written by the pool cluster's load balancer), tells
//! the client in a header of that name, and remembers the prompt's prefix there (at the first
//! pick when Envoy does not report one).

use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, Metadata, header_value_option,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as R;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, ImmediateResponse,
    ProcessingRequest, ProcessingResponse, StreamedBodyResponse, TrailersResponse, body_mutation,
    processing_response,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{Struct, Value, value};
use tonic::Status;

use super::table::Pool;
use super::{
    DESTINATION_ENDPOINT, LB_NAMESPACE, MAX_FALLBACKS, Picker, SERVED_ENDPOINT, SUBSET_KEY,
    SUBSET_NAMESPACE, request, score,
};

/// Body chunks sent back to Envoy are at most this large (its gRPC messages are limited).
const CHUNK_BYTES: usize = 60 * 1024;

pub(super) struct PickerStream {
    picker: Arc<Picker>,
    pool: Pool,
    /// The request body larger than this is not waited for: the pick is made without it.
    max_body_bytes: usize,
    full_duplex_request: bool,
    full_duplex_response: bool,
    /// The pool's endpoints this request may go to (all, or the subset Envoy named).
    candidates: Vec<SocketAddr>,
    state: State,
    body: Vec<u8>,
    /// The prompt's block hashes, recorded where the request is served.
    hashes: Vec<u64>,
    /// The endpoints picked, best first.
    picked: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the request headers.
    Start,
    /// Holding the request body until it is complete.
    Buffering,
    /// Picked: the rest of the request and the response pass through.
    Picked,
    /// Answered with an immediate response; Envoy sends nothing more.
    Done,
}

impl PickerStream {
    pub(super) fn new(picker: Arc<Picker>, pool: Pool, max_body_bytes: usize) -> PickerStream {
        PickerStream {
            picker,
            pool,
            max_body_bytes,
            full_duplex_request: true,
            full_duplex_response: false,
            candidates: Vec::new(),
            state: State::Start,
            body: Vec::new(),
            hashes: Vec::new(),
            picked: Vec::new(),
        }
    }

    pub(super) fn on_message(
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
        match (self.state, message.request) {
            (State::Start, Some(R::RequestHeaders(headers))) => {
                self.candidates = subset(&self.pool.endpoints, metadata)?;
                if headers.end_of_stream || !self.full_duplex_request {
                    return Ok(vec![self.pick()]);
                }
                self.state = State::Buffering;
                Ok(Vec::new())
            }
            (State::Buffering, Some(R::RequestBody(body))) => {
                self.body.extend_from_slice(&body.body);
                if body.end_of_stream {
                    Ok(self.pick_and_release(true, true))
                } else if self.body.len() > self.max_body_bytes {
                    Ok(self.pick_and_release(false, false))
                } else {
                    Ok(Vec::new())
                }
            }
            (State::Buffering, Some(R::RequestTrailers(_))) => {
                // The trailers end the body; the body's last chunk goes back without the end.
                let mut out = self.pick_and_release(true, false);
                if self.state == State::Picked {
                    out.push(trailers_response(true));
                }
                Ok(out)
            }
            (State::Picked, Some(R::RequestBody(body))) => Ok(vec![body_response(
                true,
                self.full_duplex_request,
                body.body,
                body.end_of_stream,
            )]),
            (State::Picked, Some(R::RequestTrailers(_))) => Ok(vec![trailers_response(true)]),
            (State::Picked, Some(R::ResponseHeaders(_))) => {
                let served = served_endpoint(metadata);
                // Without Envoy's report, the first pick is the best guess of where it went.
                let learned = served.as_deref().and_then(|s| s.parse().ok());
                if let Some(addr) = learned.or(self.picked.first().copied()) {
                    self.picker.served(addr, &self.hashes);
                }
                let headers = served.map(|s| vec![set_header(SERVED_ENDPOINT, &s)]);
                Ok(vec![headers_response(false, headers.unwrap_or_default(), None)])
            }
            (State::Picked, Some(R::ResponseBody(body))) => Ok(vec![body_response(
                false,
                self.full_duplex_response,
                body.body,
                body.end_of_stream,
            )]),
            (State::Picked, Some(R::ResponseTrailers(_))) => Ok(vec![trailers_response(false)]),
            (state, request) => Err(Status::failed_precondition(format!(
                "endpoint picker: unexpected {} in state {state:?}",
                describe(request.as_ref())
            ))),
        }
    }

    /// Picks with what has been buffered (parsed when it is the `whole` body) and releases it:
    /// the headers response, then the body, its last chunk marked `end_of_stream` if asked.
    fn pick_and_release(&mut self, whole: bool, end_of_stream: bool) -> Vec<ProcessingResponse> {
        let parsed = if whole { request::parse(&self.body) } else { None };
        if let Some(r) = &parsed {
            self.hashes = score::prefix_hashes(r.model.as_deref(), &r.prompt);
        }
        let mut headers = self.pick();
        if self.state == State::Done {
            return vec![headers];
        }
        let body = std::mem::take(&mut self.body);
        if whole {
            // Envoy drops the length of a body it streams to the processor; the whole body is
            // known here, so the model server gets it back rather than a chunked upload.
            add_header(&mut headers, "content-length", &body.len().to_string());
        }
        let mut out = vec![headers];
        out.extend(released_body(&body, end_of_stream));
        out
    }

    /// The headers response that carries the pick, or a 503 when no endpoint is eligible.
    fn pick(&mut self) -> ProcessingResponse {
        self.picked = self.picker.rank(&self.candidates, &self.hashes);
        self.picked.truncate(MAX_FALLBACKS);
        if self.picked.is_empty() {
            self.state = State::Done;
            let pool = super::table::pool_name(&self.pool.key);
            tracing::debug!(%pool, "no eligible endpoint");
            return unavailable(&pool);
        }
        self.state = State::Picked;
        let list: Vec<String> = self.picked.iter().map(SocketAddr::to_string).collect();
        let list = list.join(",");
        let metadata = Struct {
            fields: [(
                LB_NAMESPACE.to_string(),
                struct_value([(DESTINATION_ENDPOINT.to_string(), string_value(&list))]),
            )]
            .into(),
        };
        headers_response(true, vec![set_header(DESTINATION_ENDPOINT, &list)], Some(metadata))
    }

    /// The endpoints picked, best first (empty before the pick or when none was eligible).
    #[cfg(test)]
    pub(super) fn picked(&self) -> &[SocketAddr] {
        &self.picked
    }
}

/// The endpoints of `all` that Envoy's subset hint allows: `ip:port`, or `ip` for any port;
/// all of them when there is no hint. A hint that is not a string or a list of strings is an
/// error rather than a silent "all".
fn subset(all: &[SocketAddr], metadata: Option<&Metadata>) -> Result<Vec<SocketAddr>, Status> {
    let hint = metadata
        .and_then(|m| m.filter_metadata.get(SUBSET_NAMESPACE))
        .and_then(|s| s.fields.get(SUBSET_KEY));
    let Some(hint) = hint else { return Ok(all.to_vec()) };
    let mut allowed = Vec::new();
    let bad = || {
        Status::invalid_argument(format!(
            "{SUBSET_NAMESPACE}/{SUBSET_KEY} is not a list of ip:port"
        ))
    };
    let mut add = |s: &str| {
        allowed.extend(s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string))
    };
    match &hint.kind {
        Some(value::Kind::StringValue(s)) => add(s),
        Some(value::Kind::ListValue(list)) => {
            for v in &list.values {
                match &v.kind {
                    Some(value::Kind::StringValue(s)) => add(s),
                    _ => return Err(bad()),
                }
            }
        }
        _ => return Err(bad()),
    }
    Ok(all
        .iter()
        .filter(|e| {
            allowed.iter().any(|a| {
                a.parse::<SocketAddr>().is_ok_and(|s| s == **e)
                    || a.trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip == e.ip())
            })
        })
        .copied()
        .collect())
}

/// `envoy.lb` / `x-gateway-destination-endpoint-served`, as Envoy's load balancer wrote it.
fn served_endpoint(metadata: Option<&Metadata>) -> Option<String> {
    let value = metadata?.filter_metadata.get(LB_NAMESPACE)?.fields.get(SERVED_ENDPOINT)?;
    match &value.kind {
        Some(value::Kind::StringValue(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// Adds `name: value` to the header mutation of a headers response.
fn add_header(response: &mut ProcessingResponse, name: &str, value: &str) {
    if let Some(processing_response::Response::RequestHeaders(h)) = &mut response.response {
        let common = h.response.get_or_insert_with(Default::default);
        let mutation = common.header_mutation.get_or_insert_with(Default::default);
        mutation.set_headers.push(set_header(name, value));
    }
}

fn string_value(s: &str) -> Value {
    Value { kind: Some(value::Kind::StringValue(s.to_string())) }
}

fn struct_value<const N: usize>(fields: [(String, Value); N]) -> Value {
    Value { kind: Some(value::Kind::StructValue(Struct { fields: fields.into() })) }
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
    set_headers: Vec<HeaderValueOption>,
    dynamic_metadata: Option<Struct>,
) -> ProcessingResponse {
    let header_mutation =
        (!set_headers.is_empty()).then(|| HeaderMutation { set_headers, ..Default::default() });
    let headers = HeadersResponse {
        response: Some(CommonResponse { header_mutation, ..Default::default() }),
    };
    ProcessingResponse {
        response: Some(if request {
            processing_response::Response::RequestHeaders(headers)
        } else {
            processing_response::Response::ResponseHeaders(headers)
        }),
        dynamic_metadata,
        ..Default::default()
    }
}

/// A request body held back in full-duplex mode, given back to Envoy after the headers answer:
/// in chunks Envoy's gRPC messages can carry, the last marked `end_of_stream` if asked (an
/// empty body is one empty chunk). Public for endpoint pickers written against this crate, such
/// as the tests' stand-in for the Inference Extension's reference picker.
pub fn released_body(body: &[u8], end_of_stream: bool) -> Vec<ProcessingResponse> {
    if body.is_empty() {
        return vec![body_response(true, true, Vec::new(), end_of_stream)];
    }
    let chunks = body.chunks(CHUNK_BYTES).count();
    body.chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(i, chunk)| {
            body_response(true, true, chunk.to_vec(), end_of_stream && i + 1 == chunks)
        })
        .collect()
}

/// A body chunk passed on unchanged: in full-duplex mode Envoy forwards only what comes back,
/// in the other modes an empty answer leaves the chunk as it is.
pub fn body_response(
    request: bool,
    full_duplex: bool,
    body: Vec<u8>,
    end_of_stream: bool,
) -> ProcessingResponse {
    let common =
        if full_duplex {
            CommonResponse {
                body_mutation: Some(BodyMutation {
                    mutation: Some(body_mutation::Mutation::StreamedResponse(
                        StreamedBodyResponse { body, end_of_stream, ..Default::default() },
                    )),
                }),
                ..Default::default()
            }
        } else {
            CommonResponse::default()
        };
    let body = BodyResponse { response: Some(common) };
    ProcessingResponse {
        response: Some(if request {
            processing_response::Response::RequestBody(body)
        } else {
            processing_response::Response::ResponseBody(body)
        }),
        ..Default::default()
    }
}

fn trailers_response(request: bool) -> ProcessingResponse {
    let trailers = TrailersResponse::default();
    ProcessingResponse {
        response: Some(if request {
            processing_response::Response::RequestTrailers(trailers)
        } else {
            processing_response::Response::ResponseTrailers(trailers)
        }),
        ..Default::default()
    }
}

/// The protocol's answer when no endpoint is eligible: 503, with an OpenAI-style error body.
fn unavailable(pool: &str) -> ProcessingResponse {
    let body = serde_json::json!({"error": {
        "message": format!("no ready endpoint in InferencePool {pool}"),
        "type": "service_unavailable",
        "code": 503,
    }});
    ProcessingResponse {
        response: Some(processing_response::Response::ImmediateResponse(ImmediateResponse {
            status: Some(HttpStatus { code: 503 }),
            headers: Some(HeaderMutation {
                set_headers: vec![set_header("content-type", "application/json")],
                ..Default::default()
            }),
            body: body.to_string().into_bytes(),
            details: "endpoint_picker_no_eligible_endpoint".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn describe(request: Option<&R>) -> &'static str {
    match request {
        Some(R::RequestHeaders(_)) => "request headers",
        Some(R::RequestBody(_)) => "request body",
        Some(R::RequestTrailers(_)) => "request trailers",
        Some(R::ResponseHeaders(_)) => "response headers",
        Some(R::ResponseBody(_)) => "response body",
        Some(R::ResponseTrailers(_)) => "response trailers",
        None => "empty message",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Kind, ObjectKey};
    use crate::picker::ServerMetrics;
    use envoy_types::pb::envoy::config::core::v3::HeaderMap;
    use envoy_types::pb::envoy::service::ext_proc::v3::{
        HttpBody, HttpHeaders, HttpTrailers, ProtocolConfiguration,
    };
    use envoy_types::pb::google::protobuf::ListValue;
    use processing_response::Response as P;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const A: &str = "127.0.0.2:8000";
    const B: &str = "127.0.0.3:8000";

    fn stream(endpoints: &[&str]) -> (Arc<Picker>, PickerStream) {
        let picker = Picker::new();
        let pool = Pool {
            key: ObjectKey::new(Kind::InferencePool, "ns", "pool"),
            endpoints: endpoints.iter().map(|e| addr(e)).collect(),
        };
        (picker.clone(), PickerStream::new(picker, pool, 1024))
    }

    fn headers(end_of_stream: bool, metadata: Option<Metadata>) -> ProcessingRequest {
        ProcessingRequest {
            request: Some(R::RequestHeaders(HttpHeaders {
                headers: Some(HeaderMap::default()),
                end_of_stream,
                ..Default::default()
            })),
            metadata_context: metadata,
            protocol_config: Some(ProtocolConfiguration {
                request_body_mode: BodySendMode::FullDuplexStreamed as i32,
                response_body_mode: BodySendMode::None as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn body(bytes: &[u8], end_of_stream: bool) -> ProcessingRequest {
        ProcessingRequest {
            request: Some(R::RequestBody(HttpBody {
                body: bytes.to_vec(),
                end_of_stream,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn metadata(namespace: &str, key: &str, value: Value) -> Metadata {
        Metadata {
            filter_metadata: [(
                namespace.to_string(),
                Struct { fields: [(key.to_string(), value)].into() },
            )]
            .into(),
            ..Default::default()
        }
    }

    /// The endpoint list a headers response names, checking that the header and the metadata
    /// agree, as the protocol requires.
    fn destination(response: &ProcessingResponse) -> String {
        let Some(P::RequestHeaders(h)) = &response.response else { panic!("{response:?}") };
        let set = &h.response.as_ref().unwrap().header_mutation.as_ref().unwrap().set_headers;
        let header =
            set.iter().find(|s| s.header.as_ref().unwrap().key == DESTINATION_ENDPOINT).unwrap();
        let header = String::from_utf8(header.header.as_ref().unwrap().raw_value.clone()).unwrap();
        let lb = &response.dynamic_metadata.as_ref().unwrap().fields[LB_NAMESPACE];
        let Some(value::Kind::StructValue(lb)) = &lb.kind else { panic!() };
        let Some(value::Kind::StringValue(meta)) = &lb.fields[DESTINATION_ENDPOINT].kind else {
            panic!()
        };
        assert_eq!(&header, meta);
        header
    }

    fn header(response: &ProcessingResponse, name: &str) -> Option<String> {
        let Some(P::RequestHeaders(h)) = &response.response else { panic!("{response:?}") };
        let set = &h.response.as_ref()?.header_mutation.as_ref()?.set_headers;
        let h = set.iter().find(|s| s.header.as_ref().unwrap().key == name)?;
        Some(String::from_utf8(h.header.as_ref().unwrap().raw_value.clone()).unwrap())
    }

    fn streamed_body(response: &ProcessingResponse) -> (Vec<u8>, bool) {
        let Some(P::RequestBody(b)) = &response.response else { panic!("{response:?}") };
        let mutation = b.response.as_ref().unwrap().body_mutation.as_ref().unwrap();
        let Some(body_mutation::Mutation::StreamedResponse(s)) = &mutation.mutation else {
            panic!()
        };
        (s.body.clone(), s.end_of_stream)
    }

    #[test]
    fn holds_the_body_then_releases_headers_body_in_order() {
        let (picker, mut s) = stream(&[A, B]);
        picker.record_scrape(addr(A), Ok(ServerMetrics { waiting: 30.0, ..Default::default() }));
        picker.record_scrape(addr(B), Ok(ServerMetrics::default()));
        assert!(s.on_message(headers(false, None)).unwrap().is_empty());
        assert!(s.on_message(body(br#"{"model":"m","#, false)).unwrap().is_empty());
        let out = s.on_message(body(br#""prompt":"hi"}"#, true)).unwrap();
        assert_eq!(out.len(), 2);
        // The idle endpoint first, the one with the long queue as fallback.
        assert_eq!(destination(&out[0]), format!("{B},{A}"));
        assert_eq!(header(&out[0], "content-length").as_deref(), Some("27"));
        assert_eq!(streamed_body(&out[1]), (br#"{"model":"m","prompt":"hi"}"#.to_vec(), true));
        assert_eq!(s.picked(), [addr(B), addr(A)]);
    }

    #[test]
    fn a_request_without_body_is_picked_at_once() {
        let (_, mut s) = stream(&[A]);
        let out = s.on_message(headers(true, None)).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(destination(&out[0]), A);
    }

    #[test]
    fn an_unparsable_body_still_gets_an_endpoint() {
        let (_, mut s) = stream(&[A]);
        s.on_message(headers(false, None)).unwrap();
        let out = s.on_message(body(b"\x00not json", true)).unwrap();
        assert_eq!(destination(&out[0]), A);
        assert_eq!(streamed_body(&out[1]).0, b"\x00not json");
    }

    #[test]
    fn a_large_body_is_not_waited_for() {
        let (_, mut s) = stream(&[A]);
        s.on_message(headers(false, None)).unwrap();
        let big = vec![b'x'; 1500];
        let out = s.on_message(body(&big, false)).unwrap();
        assert_eq!(destination(&out[0]), A);
        assert_eq!(header(&out[0], "content-length"), None, "the length is not known yet");
        assert_eq!(streamed_body(&out[1]), (big, false));
        // The rest passes straight through.
        let out = s.on_message(body(b"tail", true)).unwrap();
        assert_eq!(streamed_body(&out[0]), (b"tail".to_vec(), true));
    }

    #[test]
    fn trailers_end_the_body_and_are_answered_last() {
        let (_, mut s) = stream(&[A]);
        s.on_message(headers(false, None)).unwrap();
        s.on_message(body(b"{}", false)).unwrap();
        let trailers = ProcessingRequest {
            request: Some(R::RequestTrailers(HttpTrailers::default())),
            ..Default::default()
        };
        let out = s.on_message(trailers).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(header(&out[0], "content-length").as_deref(), Some("2"));
        assert_eq!(streamed_body(&out[1]), (b"{}".to_vec(), false));
        assert!(matches!(out[2].response, Some(P::RequestTrailers(_))));
    }

    #[test]
    fn the_subset_hint_limits_the_candidates() {
        let (_, mut s) = stream(&[A, B, "127.0.0.3:8001"]);
        let list = Value {
            kind: Some(value::Kind::ListValue(ListValue {
                values: vec![string_value("127.0.0.3")],
            })),
        };
        let out = s
            .on_message(headers(true, Some(metadata(SUBSET_NAMESPACE, SUBSET_KEY, list))))
            .unwrap();
        let picked = destination(&out[0]);
        let mut picked: Vec<&str> = picked.split(',').collect();
        picked.sort();
        assert_eq!(picked, [B, "127.0.0.3:8001"]);
        // A comma-separated string names exact endpoints.
        let (_, mut s) = stream(&[A, B]);
        let hint =
            metadata(SUBSET_NAMESPACE, SUBSET_KEY, string_value(&format!(" {A} ,10.9.9.9:1")));
        assert_eq!(destination(&s.on_message(headers(true, Some(hint))).unwrap()[0]), A);
    }

    #[test]
    fn no_eligible_endpoint_is_503() {
        for (endpoints, hint) in [
            (vec![], None),
            (vec![A], Some(metadata(SUBSET_NAMESPACE, SUBSET_KEY, string_value("10.0.0.1:80")))),
            (vec![A], Some(metadata(SUBSET_NAMESPACE, SUBSET_KEY, string_value("")))),
        ] {
            let (_, mut s) = stream(&endpoints);
            s.on_message(headers(false, hint)).unwrap();
            let out = s.on_message(body(b"{}", true)).unwrap();
            assert_eq!(out.len(), 1, "nothing after the immediate response");
            let Some(P::ImmediateResponse(r)) = &out[0].response else { panic!("{out:?}") };
            assert_eq!(r.status.unwrap().code, 503);
            let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(json["error"]["message"], "no ready endpoint in InferencePool ns/pool");
        }
    }

    #[test]
    fn a_malformed_subset_hint_is_an_error() {
        let (_, mut s) = stream(&[A]);
        let hint = metadata(
            SUBSET_NAMESPACE,
            SUBSET_KEY,
            Value { kind: Some(value::Kind::NumberValue(1.0)) },
        );
        assert_eq!(
            s.on_message(headers(true, Some(hint))).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn the_served_endpoint_is_reported_and_remembered_for_the_prefix() {
        let (picker, mut s) = stream(&[A, B]);
        let prompt = "p".repeat(score::BLOCK_BYTES * 3);
        let request = format!(r#"{{"model":"m","prompt":"{prompt}"}}"#);
        s.on_message(headers(false, None)).unwrap();
        s.on_message(body(request.as_bytes(), true)).unwrap();
        let served = metadata(LB_NAMESPACE, SERVED_ENDPOINT, string_value(B));
        let response = ProcessingRequest {
            request: Some(R::ResponseHeaders(HttpHeaders::default())),
            metadata_context: Some(served),
            ..Default::default()
        };
        let out = s.on_message(response).unwrap();
        let Some(P::ResponseHeaders(h)) = &out[0].response else { panic!() };
        let set = &h.response.as_ref().unwrap().header_mutation.as_ref().unwrap().set_headers[0];
        let header = set.header.as_ref().unwrap();
        assert_eq!(
            (header.key.as_str(), header.raw_value.as_slice()),
            (SERVED_ENDPOINT, B.as_bytes())
        );
        // Same prompt again, equal loads: the endpoint that served it wins, whatever the turn.
        for _ in 0..3 {
            picker.record_scrape(addr(A), Ok(ServerMetrics::default()));
            picker.record_scrape(addr(B), Ok(ServerMetrics::default()));
            let mut again = PickerStream::new(picker.clone(), s.pool.clone(), 1 << 20);
            again.on_message(headers(false, None)).unwrap();
            let out = again.on_message(body(request.as_bytes(), true)).unwrap();
            assert!(destination(&out[0]).starts_with(B));
        }
    }

    #[test]
    fn without_a_served_report_the_prefix_is_remembered_at_the_first_pick() {
        let (picker, mut s) = stream(&[A, B]);
        let request = format!(r#"{{"prompt":"{}"}}"#, "q".repeat(score::BLOCK_BYTES * 2));
        s.on_message(headers(false, None)).unwrap();
        let first = destination(&s.on_message(body(request.as_bytes(), true)).unwrap()[0]);
        let first = first.split(',').next().unwrap().to_string();
        let response = ProcessingRequest {
            request: Some(R::ResponseHeaders(HttpHeaders::default())),
            ..Default::default()
        };
        s.on_message(response).unwrap();
        for _ in 0..3 {
            picker.record_scrape(addr(A), Ok(ServerMetrics::default()));
            picker.record_scrape(addr(B), Ok(ServerMetrics::default()));
            let mut again = PickerStream::new(picker.clone(), s.pool.clone(), 1 << 20);
            again.on_message(headers(false, None)).unwrap();
            let out = again.on_message(body(request.as_bytes(), true)).unwrap();
            assert!(destination(&out[0]).starts_with(&first));
        }
    }

    #[test]
    fn response_without_served_metadata_passes_unchanged() {
        let (_, mut s) = stream(&[A]);
        s.on_message(headers(true, None)).unwrap();
        let response = ProcessingRequest {
            request: Some(R::ResponseHeaders(HttpHeaders::default())),
            ..Default::default()
        };
        let out = s.on_message(response).unwrap();
        let Some(P::ResponseHeaders(h)) = &out[0].response else { panic!() };
        assert!(h.response.as_ref().unwrap().header_mutation.is_none());
    }

    #[test]
    fn messages_out_of_order_are_errors() {
        let (_, mut s) = stream(&[A]);
        assert!(s.on_message(body(b"{}", true)).is_err());
    }

    #[test]
    fn sent_requests_count_until_the_next_scrape() {
        let (picker, _) = stream(&[A, B]);
        picker.record_scrape(addr(A), Ok(ServerMetrics::default()));
        picker.record_scrape(addr(B), Ok(ServerMetrics::default()));
        let mut counts = std::collections::HashMap::new();
        for _ in 0..40 {
            let first = picker.rank(&[addr(A), addr(B)], &[])[0];
            *counts.entry(first).or_insert(0) += 1;
        }
        // Without new metrics, a burst spreads instead of piling on one endpoint.
        assert_eq!(counts[&addr(A)], 20);
        assert_eq!(counts[&addr(B)], 20);
    }
}
