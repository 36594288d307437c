//! Stand-ins for the Gateway API Inference Extension (GIE) gateway conformance suite's pods,
//! run in-process on loopback addresses: [`echo::Echo`] for the `echo-basic` model servers and
//! [`epp::Epp`] for the `lwepp` endpoint picker; and their self-tests.

pub(crate) mod echo;
pub(crate) mod epp;

use std::future::Future;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// A server's accept loop, running as a task that owns every connection: stopping it, or
/// dropping it, closes the port and drops the connections.
pub(crate) struct ServerTask {
    task: Option<JoinHandle<()>>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl ServerTask {
    /// Accepts on `listener`, serving each connection with `serve` in a task of its own.
    pub(crate) fn spawn<F, Fut>(listener: TcpListener, mut serve: F) -> ServerTask
    where
        F: FnMut(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (shutdown, mut shut_down) = oneshot::channel();
        let task = tokio::spawn(async move {
            // Dropped with this task (when it is aborted), which aborts every connection's.
            let mut connections = JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = &mut shut_down => break,
                };
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    // Out of file descriptors, or the like: try again shortly.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                while connections.try_join_next().is_some() {}
                connections.spawn(serve(stream));
            }
            drop(listener);
            connections.shutdown().await;
        });
        ServerTask { task: Some(task), shutdown: Some(shutdown) }
    }

    /// Stops the task: the port closes and the connections are dropped at the runtime's next
    /// turn.
    pub(crate) fn stop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }

    /// Stops the task and waits until the port is closed and every connection dropped.
    pub(crate) async fn stop_and_wait(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.stop();
    }
}

mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
    use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
    use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
    use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as In;
    use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Out;
    use envoy_types::pb::envoy::service::ext_proc::v3::{
        HttpBody, HttpHeaders, ProcessingRequest, ProcessingResponse, ProtocolConfiguration,
        body_mutation,
    };
    use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value};
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper::{Request, Version};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::Streaming;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    use super::echo::{Echo, Mode};
    use super::epp::{
        DESTINATION_ENDPOINT, Epp, HEALTH_SERVICES, RESPONSE_HEADERS_SEEN, SELECTION_HEADER,
        SERVED_HEADER,
    };
    use super::*;

    /// A loopback address of these tests, on a free port chosen when bound.
    fn loopback(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 0)
    }

    struct Reply {
        status: u16,
        headers: hyper::HeaderMap,
        body: Vec<u8>,
    }

    impl Reply {
        fn header(&self, name: &str) -> &str {
            self.headers.get(name).map_or("", |v| v.to_str().unwrap())
        }

        fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).unwrap()
        }
    }

    /// Sends `request` on a fresh connection to `addr`, in HTTP/2 with prior knowledge (the
    /// request's URI then needs a scheme and authority) or HTTP/1.1.
    async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> Reply {
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let response = if request.version() == Version::HTTP_2 {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
            tokio::spawn(connection);
            sender.send_request(request).await.unwrap()
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(connection);
            sender.send_request(request).await.unwrap()
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
        Reply { status, headers, body }
    }

    #[tokio::test]
    async fn echo_describes_http1_requests_and_sets_asked_headers() {
        let echo = Echo::start(loopback("127.0.1.1"), "pod-a", "gie-ns", Mode::Http1).await;
        let request = Request::post("/v1/completions?x=1")
            .header("host", "gateway.example")
            .header(SELECTION_HEADER, "10.0.0.1")
            .header("x-echo-set-header", "x-conformance-test-served-endpoint:10.0.0.1:8000")
            .header("x-echo-set-header", " X-Other : two words ")
            .body(Full::from(r#"{"prompt": "hi"}"#))
            .unwrap();
        let reply = send(echo.addr(), request).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), "application/json");
        assert_eq!(reply.header(SERVED_HEADER), "10.0.0.1:8000");
        assert_eq!(reply.header("x-other"), "two words");
        let body = reply.json();
        assert_eq!(body["path"], "/v1/completions?x=1");
        assert_eq!(body["host"], "gateway.example");
        assert_eq!(body["method"], "POST");
        assert_eq!(body["proto"], "HTTP/1.1");
        assert_eq!(body["namespace"], "gie-ns");
        assert_eq!(body["pod"], "pod-a");
        assert_eq!(body["httpPort"], echo.addr().port().to_string());
        let headers = &body["headers"];
        assert_eq!(headers["Test-Epp-Endpoint-Selection"], json!(["10.0.0.1"]));
        assert_eq!(
            headers["X-Echo-Set-Header"],
            json!(["x-conformance-test-served-endpoint:10.0.0.1:8000", "X-Other : two words"])
        );
        assert!(headers.get("Host").is_none(), "{headers}");
        assert_eq!(echo.requests(), 1);
        assert_eq!(echo.paths(), ["/v1/completions?x=1"]);
    }

    #[tokio::test]
    async fn echo_waits_the_asked_delay() {
        let echo = Echo::start(loopback("127.0.1.1"), "pod-a", "gie-ns", Mode::Http1).await;
        let get =
            |path: &str| Request::get(path).header("host", "echo").body(Full::default()).unwrap();
        let started = Instant::now();
        let reply = send(echo.addr(), get("/slow?delay=300ms")).await;
        assert_eq!(reply.status, 200);
        assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
        assert_eq!(send(echo.addr(), get("/?delay=soon")).await.status, 400);
        assert_eq!(echo.paths(), ["/slow?delay=300ms", "/?delay=soon"]);
    }

    #[tokio::test]
    async fn h2c_echo_answers_http2_with_prior_knowledge_only() {
        let echo = Echo::start(loopback("127.0.1.2"), "pod-h2", "gie-ns", Mode::H2c).await;
        let request = Request::get("http://model.example/chat?stream=1")
            .version(Version::HTTP_2)
            .header("x-trace", "t1")
            .body(Full::default())
            .unwrap();
        let reply = send(echo.addr(), request).await;
        assert_eq!(reply.status, 200);
        let body = reply.json();
        assert_eq!(body["proto"], "HTTP/2.0");
        assert_eq!(body["host"], "model.example");
        assert_eq!(body["path"], "/chat?stream=1");
        assert_eq!(body["headers"]["X-Trace"], json!(["t1"]));
        assert_eq!(body["pod"], "pod-h2");

        // HTTP/1.1 gets a 400, and the connection is closed.
        let mut stream = TcpStream::connect(echo.addr()).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nhost: echo\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .expect("the connection is closed")
            .unwrap();
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
        assert_eq!(echo.requests(), 1);
    }

    #[tokio::test]
    async fn stopped_servers_refuse_connections() {
        let mut echo = Echo::start(loopback("127.0.1.3"), "pod-a", "gie-ns", Mode::Http1).await;
        let addr = echo.addr();
        echo.stop_and_wait().await;
        assert!(TcpStream::connect(addr).await.is_err());
        let refused = |addr| async move { TcpStream::connect(addr).await.is_err().then_some(()) };
        let mut echo = Echo::start(loopback("127.0.1.3"), "pod-a", "gie-ns", Mode::H2c).await;
        let addr = echo.addr();
        echo.stop();
        crate::harness::eventually(5, "the stopped echo server's port closes", || refused(addr))
            .await;
        let echo = Echo::start(loopback("127.0.1.3"), "pod-a", "gie-ns", Mode::H2c).await;
        let addr = echo.addr();
        drop(echo);
        crate::harness::eventually(5, "the dropped echo server's port closes", || refused(addr))
            .await;
    }

    #[tokio::test]
    async fn the_picker_reports_serving_to_health_checks() {
        let mut epp = Epp::start(loopback("127.0.1.4"), vec![]).await;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", epp.addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel);
        let check = |service: &str| HealthCheckRequest { service: service.to_string() };
        for service in HEALTH_SERVICES {
            let status = health.check(check(service)).await.unwrap().into_inner().status;
            assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
        }
        let unknown = health.check(check("other")).await.unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        epp.set_serving(false).await;
        let status = health.check(check(HEALTH_SERVICES[0])).await.unwrap().into_inner().status;
        assert_eq!(status, ServingStatus::NotServing as i32);
        epp.stop_and_wait().await;
        assert!(health.check(check("")).await.is_err(), "a stopped picker does not answer");
    }

    /// One ext_proc stream to the picker, played from Envoy's side.
    struct ExtProc {
        to_picker: mpsc::Sender<ProcessingRequest>,
        from_picker: Streaming<ProcessingResponse>,
    }

    impl ExtProc {
        async fn open(addr: SocketAddr) -> ExtProc {
            let mut client =
                ExternalProcessorClient::connect(format!("http://{addr}")).await.unwrap();
            let (to_picker, rx) = mpsc::channel(16);
            let from_picker = client.process(ReceiverStream::new(rx)).await.unwrap().into_inner();
            ExtProc { to_picker, from_picker }
        }

        async fn send(&self, message: ProcessingRequest) {
            self.to_picker.send(message).await.unwrap();
        }

        async fn next(&mut self) -> Result<ProcessingResponse, tonic::Status> {
            let next = tokio::time::timeout(Duration::from_secs(5), self.from_picker.message());
            match next.await.expect("the picker answers") {
                Ok(Some(response)) => Ok(response),
                Ok(None) => panic!("the picker ended the stream"),
                Err(status) => Err(status),
            }
        }

        /// Nothing comes from the picker for a while.
        async fn quiet(&mut self) {
            let next = tokio::time::timeout(Duration::from_millis(300), self.from_picker.message());
            if let Ok(answer) = next.await {
                panic!("unexpected answer {answer:?}");
            }
        }
    }

    /// Envoy's first message: the request headers, and the picker filter's processing mode.
    fn request_headers(
        headers: &[(&str, &str)],
        end_of_stream: bool,
        metadata: Option<Metadata>,
    ) -> ProcessingRequest {
        let headers = headers
            .iter()
            .map(|(k, v)| HeaderValue {
                key: k.to_string(),
                raw_value: v.as_bytes().to_vec(),
                ..Default::default()
            })
            .collect();
        ProcessingRequest {
            request: Some(In::RequestHeaders(HttpHeaders {
                headers: Some(HeaderMap { headers }),
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

    fn request_body(body: &str, end_of_stream: bool) -> ProcessingRequest {
        ProcessingRequest {
            request: Some(In::RequestBody(HttpBody {
                body: body.as_bytes().to_vec(),
                end_of_stream,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn response_headers(metadata: Option<Metadata>) -> ProcessingRequest {
        ProcessingRequest {
            request: Some(In::ResponseHeaders(HttpHeaders::default())),
            metadata_context: metadata,
            ..Default::default()
        }
    }

    /// Metadata with `namespace` / `key` = `value`.
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

    fn string(s: &str) -> Value {
        Value { kind: Some(value::Kind::StringValue(s.to_string())) }
    }

    /// The headers a headers response sets, as `name=value` strings.
    fn set_headers(response: &ProcessingResponse) -> Vec<String> {
        let (Some(Out::RequestHeaders(h)) | Some(Out::ResponseHeaders(h))) = &response.response
        else {
            panic!("not a headers response: {response:?}")
        };
        let mutation = h.response.as_ref().and_then(|c| c.header_mutation.as_ref());
        mutation
            .map(|m| m.set_headers.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|o| {
                let h = o.header.as_ref().unwrap();
                format!("{}={}", h.key, String::from_utf8_lossy(&h.raw_value))
            })
            .collect()
    }

    /// Checks the request headers response is a pick, and returns the endpoint picked.
    fn picked(response: &ProcessingResponse) -> SocketAddr {
        let Some(Out::RequestHeaders(h)) = &response.response else {
            panic!("not a request headers response: {response:?}")
        };
        assert!(h.response.as_ref().unwrap().clear_route_cache);
        let set = set_headers(response);
        let pick = set[0].strip_prefix(&format!("{DESTINATION_ENDPOINT}=")).unwrap().to_string();
        assert_eq!(set[1], format!("x-echo-set-header={SERVED_HEADER}:{pick}"));
        let lb = &response.dynamic_metadata.as_ref().unwrap().fields["envoy.lb"];
        let Some(value::Kind::StructValue(lb)) = &lb.kind else { panic!("{lb:?}") };
        assert_eq!(lb.fields[DESTINATION_ENDPOINT], string(&pick));
        pick.parse().unwrap()
    }

    const A: &str = "127.0.1.10:3000";
    const B: &str = "127.0.1.11:3000";
    const C: &str = "127.0.1.11:3001";

    fn pool() -> Vec<SocketAddr> {
        [A, B, C].iter().map(|e| e.parse().unwrap()).collect()
    }

    #[tokio::test]
    async fn the_picker_holds_the_headers_until_the_body_is_complete() {
        let epp = Epp::start(loopback("127.0.1.5"), pool()).await;
        let mut seen = Vec::new();
        for _ in 0..2 {
            let mut stream = ExtProc::open(epp.addr()).await;
            stream.send(request_headers(&[(SELECTION_HEADER, "127.0.1.11")], false, None)).await;
            stream.quiet().await;
            stream.send(request_body(r#"{"prompt": "hi"}"#, true)).await;
            let headers = stream.next().await.unwrap();
            let pick = picked(&headers);
            assert!(set_headers(&headers).contains(&"content-length=16".to_string()));
            let Some(Out::RequestBody(body)) = stream.next().await.unwrap().response else {
                panic!("the body comes back after the headers")
            };
            let Some(body_mutation::Mutation::StreamedResponse(body)) =
                body.response.unwrap().body_mutation.unwrap().mutation
            else {
                panic!("the body comes back streamed")
            };
            assert_eq!(
                (body.body.as_slice(), body.end_of_stream),
                (&br#"{"prompt": "hi"}"#[..], true)
            );

            let served = metadata(
                "envoy.lb",
                "x-gateway-destination-endpoint-served",
                string(&pick.to_string()),
            );
            stream.send(response_headers(Some(served))).await;
            let answer = stream.next().await.unwrap();
            assert!(matches!(answer.response, Some(Out::ResponseHeaders(_))), "{answer:?}");
            assert_eq!(
                set_headers(&answer),
                [format!("{SERVED_HEADER}={pick}"), format!("{RESPONSE_HEADERS_SEEN}=true")]
            );
            seen.push(pick);
        }
        assert_eq!(epp.picked(), seen);
        // Round robin among the endpoints of that IP.
        seen.sort();
        assert_eq!(seen, [B.parse().unwrap(), C.parse::<SocketAddr>().unwrap()]);
        assert_eq!(epp.picks(), 2);
    }

    #[tokio::test]
    async fn the_picker_narrows_by_header_then_by_subset_hint() {
        let epp = Epp::start(loopback("127.0.1.6"), pool()).await;

        // A bodiless request is answered at once; `ip:port` names one endpoint.
        let mut stream = ExtProc::open(epp.addr()).await;
        stream
            .send(request_headers(&[(SELECTION_HEADER, "10.1.1.1, 127.0.1.10:3000")], true, None))
            .await;
        assert_eq!(picked(&stream.next().await.unwrap()), A.parse().unwrap());
        stream.send(response_headers(None)).await;
        assert_eq!(
            set_headers(&stream.next().await.unwrap())[0],
            format!("{SERVED_HEADER}=fail: missing envoy lb metadata")
        );

        // Without the header, Envoy's subset hint.
        let subset =
            Value { kind: Some(value::Kind::ListValue(ListValue { values: vec![string(C)] })) };
        let hint =
            metadata("envoy.lb.subset_hint", "x-gateway-destination-endpoint-subset", subset);
        let mut stream = ExtProc::open(epp.addr()).await;
        stream.send(request_headers(&[], true, Some(hint))).await;
        assert_eq!(picked(&stream.next().await.unwrap()), C.parse().unwrap());
        stream.send(response_headers(Some(metadata("envoy.lb", "other", string("x"))))).await;
        assert_eq!(
            set_headers(&stream.next().await.unwrap())[0],
            format!("{SERVED_HEADER}=fail: missing destination endpoint served metadata")
        );

        // Without either, any endpoint of the pool.
        let mut stream = ExtProc::open(epp.addr()).await;
        stream.send(request_headers(&[], true, None)).await;
        assert!(pool().contains(&picked(&stream.next().await.unwrap())));
        assert_eq!(epp.picks(), 3);
    }

    #[tokio::test]
    async fn the_picker_fails_the_stream_without_candidates_and_can_be_stopped() {
        let mut epp = Epp::start(loopback("127.0.1.7"), pool()).await;
        let mut stream = ExtProc::open(epp.addr()).await;
        stream.send(request_headers(&[(SELECTION_HEADER, "10.9.9.9")], false, None)).await;
        stream.send(request_body("{}", true)).await;
        let error = stream.next().await.unwrap_err();
        assert_eq!(error.code(), tonic::Code::Unavailable, "{error:?}");
        assert_eq!(epp.picks(), 0);

        // Stopped, it drops the open streams and refuses connections.
        let mut open = ExtProc::open(epp.addr()).await;
        open.send(request_headers(&[], false, None)).await;
        let addr = epp.addr();
        epp.stop();
        assert!(open.next().await.is_err(), "the open stream fails");
        crate::harness::eventually(5, "the stopped picker's port closes", || async {
            TcpStream::connect(addr).await.is_err().then_some(())
        })
        .await;
    }
}
