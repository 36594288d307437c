//! The ADS gRPC service: one task per Envoy stream, delta or state-of-the-world.
//!
//! Takes: the [`SnapshotStore`] and Envoy's request streams. Gives: responses built by
//! [`DeltaState`] / [`SotwState`], pushed when a request arrives and whenever the store publishes
//! (each stream hands only the names changed since its last push to its state); the [`Clients`]
//! registry of open streams and the [`PushLog`] of every response sent.

use std::sync::{Arc, Mutex, MutexGuard};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::ack::{Answer, UnknownType};
use super::clients::{Clients, PushLog, PushRecord, Registration, StreamKind, Summary};
use super::stats::Timings;
use super::{DeltaState, Snapshot, SnapshotStore, SotwState, TypeUrl, XdsStats};

/// Large route tables and many clusters make big responses; Envoy accepts these sizes too.
const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Responses queued per stream before its task waits for Envoy to read.
const STREAM_BUFFER: usize = 16;

/// Serves ADS from a [`SnapshotStore`].
#[derive(Clone)]
pub struct AdsServer {
    store: Arc<SnapshotStore>,
    clients: Arc<Clients>,
    push_log: Arc<PushLog>,
    stats: Arc<XdsStats>,
    /// Streams end when this turns true (the replica is stopping).
    ending: Option<watch::Receiver<bool>>,
}

impl AdsServer {
    pub fn new(store: Arc<SnapshotStore>) -> Self {
        AdsServer {
            store,
            clients: Arc::default(),
            push_log: Arc::default(),
            stats: Arc::default(),
            ending: None,
        }
    }

    /// Ends every stream with UNAVAILABLE once `stop` turns true, so that Envoy reconnects to
    /// another replica instead of holding this one's shutdown open.
    pub fn ending_on(mut self, stop: watch::Receiver<bool>) -> Self {
        self.ending = Some(stop);
        self
    }

    /// Counters of pushes and NACKs per type.
    pub fn stats(&self) -> Arc<XdsStats> {
        Arc::clone(&self.stats)
    }

    /// The open streams.
    pub fn clients(&self) -> Arc<Clients> {
        Arc::clone(&self.clients)
    }

    /// The responses sent to every stream.
    pub fn push_log(&self) -> Arc<PushLog> {
        Arc::clone(&self.push_log)
    }

    /// The tonic service, with message size limits fit for large configurations.
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<AdsServer> {
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    fn spawn<S: Protocol>(
        &self,
        requests: Streaming<S::Request>,
    ) -> ReceiverStream<Result<S::Response, Status>> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(serve_stream::<S>(self.clone(), requests, tx));
        ReceiverStream::new(rx)
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Ok(Response::new(self.spawn::<SotwState>(request.into_inner())))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Ok(Response::new(self.spawn::<DeltaState>(request.into_inner())))
    }
}

/// What the stream loop needs from a flavour of ADS.
trait Protocol: Summary + Default + Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    const KIND: StreamKind;

    fn node_id(req: &Self::Request) -> Option<&str>;
    fn on_request(&mut self, req: &Self::Request) -> Result<(TypeUrl, Answer), UnknownType>;
    fn responses(
        &mut self,
        snapshot: &Snapshot,
        changed: Option<&[(TypeUrl, String)]>,
    ) -> Vec<Self::Response>;
    /// (type, resource names, removed names, nonce) of a response just built, for the log.
    fn describe(
        &self,
        resp: &Self::Response,
    ) -> (Option<TypeUrl>, Vec<String>, Vec<String>, String);
}

impl Protocol for DeltaState {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const KIND: StreamKind = StreamKind::Delta;

    fn node_id(req: &Self::Request) -> Option<&str> {
        req.node.as_ref().map(|n| n.id.as_str())
    }

    fn on_request(&mut self, req: &Self::Request) -> Result<(TypeUrl, Answer), UnknownType> {
        DeltaState::on_request(self, req)
    }

    fn responses(
        &mut self,
        snapshot: &Snapshot,
        changed: Option<&[(TypeUrl, String)]>,
    ) -> Vec<Self::Response> {
        DeltaState::responses(self, snapshot, changed)
    }

    fn describe(
        &self,
        resp: &Self::Response,
    ) -> (Option<TypeUrl>, Vec<String>, Vec<String>, String) {
        let names = resp.resources.iter().map(|r| r.name.clone()).collect();
        let type_url = TypeUrl::parse(&resp.type_url);
        (type_url, names, resp.removed_resources.clone(), resp.nonce.clone())
    }
}

impl Protocol for SotwState {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const KIND: StreamKind = StreamKind::Sotw;

    fn node_id(req: &Self::Request) -> Option<&str> {
        req.node.as_ref().map(|n| n.id.as_str())
    }

    fn on_request(&mut self, req: &Self::Request) -> Result<(TypeUrl, Answer), UnknownType> {
        SotwState::on_request(self, req)
    }

    fn responses(
        &mut self,
        snapshot: &Snapshot,
        changed: Option<&[(TypeUrl, String)]>,
    ) -> Vec<Self::Response> {
        SotwState::responses(self, snapshot, changed)
    }

    fn describe(
        &self,
        resp: &Self::Response,
    ) -> (Option<TypeUrl>, Vec<String>, Vec<String>, String) {
        let type_url = TypeUrl::parse(&resp.type_url);
        // The bodies are encoded; the names are those the state recorded for the response.
        let names = type_url.map(|t| self.sent_names(t)).unwrap_or_default();
        (type_url, names, Vec::new(), resp.nonce.clone())
    }
}

/// One stream's loop: the first request names the node; then every request and every publish
/// may push. Ends when Envoy closes the stream or stops reading responses.
async fn serve_stream<S: Protocol>(
    server: AdsServer,
    mut requests: Streaming<S::Request>,
    tx: mpsc::Sender<Result<S::Response, Status>>,
) {
    let first = tokio::select! {
        first = requests.message() => first,
        () = tx.closed() => return,
    };
    let first = match first {
        Ok(Some(first)) => first,
        Ok(None) => return,
        Err(status) => {
            tracing::debug!(%status, "ADS stream failed before its first request");
            return;
        }
    };
    let Some(node_id) = S::node_id(&first).filter(|id| !id.is_empty()).map(str::to_string) else {
        let status = Status::invalid_argument("the first request must carry node.id");
        // The stream ends either way; a client gone already needs no error.
        let _ = tx.send(Err(status)).await;
        return;
    };
    tracing::info!(node_id, kind = ?S::KIND, "ADS stream opened");
    // Subscribed before the first snapshot is read, so no publish after it is missed.
    let wake = server.store.subscribe();
    let revision = server.store.load().revision;
    let state = Arc::new(Mutex::new(S::default()));
    let registration = server.clients.register(node_id.clone(), S::KIND, state.clone());
    let mut stream = Stream {
        server,
        node_id,
        state,
        revision,
        _registration: registration,
        tx,
        wake,
        timings: Timings::default(),
    };
    if stream.on_request(first).await.is_ok() {
        stream.run(requests).await;
    }
    tracing::info!(node_id = stream.node_id, kind = ?S::KIND, "ADS stream closed");
}

/// Envoy went away: nothing more to send.
struct Closed;

struct Stream<S: Protocol> {
    server: AdsServer,
    node_id: String,
    /// Shared with the registry, which reads it when listed; never locked across an await.
    state: Arc<Mutex<S>>,
    /// The snapshot revision the state was last brought up to.
    revision: u64,
    /// Listed in [`Clients`] while the stream lives.
    _registration: Registration,
    tx: mpsc::Sender<Result<S::Response, Status>>,
    wake: watch::Receiver<u64>,
    /// Responses awaiting Envoy's answer, for the latency histograms.
    timings: Timings,
}

impl<S: Protocol> Stream<S> {
    async fn run(&mut self, mut requests: Streaming<S::Request>) {
        let mut ending = self.server.ending.clone();
        let stopping = async move {
            match ending.as_mut() {
                Some(stop) => {
                    let _ = stop.wait_for(|s| *s).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(stopping);
        loop {
            let step = tokio::select! {
                request = requests.message() => match request {
                    Ok(Some(request)) => self.on_request(request).await,
                    Ok(None) => Err(Closed),
                    Err(status) => {
                        tracing::debug!(node_id = self.node_id, %status, "ADS stream failed");
                        Err(Closed)
                    }
                },
                woke = self.wake.changed() => match woke {
                    Ok(()) => self.push().await,
                    // Cannot happen while this stream holds the store; ending beats spinning.
                    Err(_) => Err(Closed),
                },
                () = self.tx.closed() => Err(Closed),
                () = &mut stopping => {
                    let status = Status::unavailable("this aixds replica is stopping; reconnect");
                    let _ = self.tx.send(Err(status)).await;
                    Err(Closed)
                }
            };
            if step.is_err() {
                return;
            }
        }
    }

    async fn on_request(&mut self, request: S::Request) -> Result<(), Closed> {
        let node_id = &self.node_id;
        let answer = self.state().on_request(&request);
        match answer {
            Ok((type_url, Answer::Nack { nonce, error })) => {
                self.server.stats.nacked(type_url);
                self.timings.answered(&self.server.stats, &nonce, false);
                tracing::warn!(node_id, %type_url, nonce, error, "Envoy rejected a response (NACK)");
            }
            Ok((type_url, Answer::Stale { nonce })) => {
                tracing::debug!(node_id, %type_url, nonce, "ignoring an answer to an old response");
            }
            Ok((_, Answer::Ack { nonce })) => {
                self.timings.answered(&self.server.stats, &nonce, true);
            }
            Ok((_, Answer::Request)) => {}
            Err(e) => tracing::warn!(node_id, error = %e, "ignoring request"),
        }
        self.push().await
    }

    fn state(&self) -> MutexGuard<'_, S> {
        // A panic mid-update ends the stream's task, so a poisoned state is never used again.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends whatever brings Envoy up to the current snapshot.
    async fn push(&mut self) -> Result<(), Closed> {
        let snapshot = self.server.store.load();
        // Read after the snapshot, so it covers at least everything up to the snapshot.
        let changed = if snapshot.revision == self.revision {
            Some(Vec::new())
        } else {
            self.server.store.changed_since(self.revision)
        };
        // Only responses that bring a newer snapshot are propagation, and timed.
        let published = snapshot.published_at.filter(|_| snapshot.revision > self.revision);
        let mut timed = Vec::new();
        let responses = {
            let mut state = self.state();
            let responses = state.responses(&snapshot, changed.as_deref());
            for response in &responses {
                let (type_url, names, removed, nonce) = state.describe(response);
                if let Some(type_url) = type_url {
                    self.server.stats.pushed(type_url, names.len());
                    if let Some(published) = published {
                        timed.push((type_url, nonce.clone(), published));
                    }
                    self.server.push_log.record(PushRecord {
                        node_id: self.node_id.clone(),
                        kind: S::KIND,
                        type_url,
                        names,
                        removed,
                        nonce,
                        revision: snapshot.revision,
                    });
                }
            }
            responses
        };
        for (type_url, nonce, published) in timed {
            self.timings.sent(&self.server.stats, type_url, nonce, published);
        }
        self.revision = snapshot.revision;
        for response in responses {
            self.tx.send(Ok(response)).await.map_err(|_| Closed)?;
        }
        Ok(())
    }
}
