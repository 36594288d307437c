//! The ADS server over real gRPC: a tonic client on a loopback socket plays Envoy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aixds::xds::{
    AdsServer, ClientInfo, Clients, PushLog, Resource, SnapshotStore, StreamKind, TypeUrl, Update,
};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    Address, Node, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::Streaming;
use tonic::transport::{Channel, Server};

use TypeUrl::{Cluster as CDS, ClusterLoadAssignment as EDS};

/// Long enough for a slow CI machine; a healthy run answers in milliseconds.
const WAIT: Duration = Duration::from_secs(10);

fn cluster(name: &str) -> Update {
    let c = Cluster { name: name.into(), ..Default::default() };
    put(CDS, Resource::new(name.into(), &c, vec![]))
}

/// A cluster whose content differs from [`cluster`]'s, i.e. a new version.
fn cluster_v2(name: &str) -> Update {
    let c = Cluster { name: name.into(), alt_stat_name: "v2".into(), ..Default::default() };
    put(CDS, Resource::new(name.into(), &c, vec![]))
}

/// Endpoints of cluster `name`: one backend at `ip:8000`.
fn endpoints(name: &str, ip: &str) -> Update {
    let address = Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(8000)),
            ..Default::default()
        })),
    };
    let endpoint = Endpoint { address: Some(address), ..Default::default() };
    let lb = LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(endpoint)),
        ..Default::default()
    };
    let cla = ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints { lb_endpoints: vec![lb], ..Default::default() }],
        ..Default::default()
    };
    put(EDS, Resource::new(name.into(), &cla, vec![]))
}

fn put(type_url: TypeUrl, resource: Resource) -> Update {
    Update { type_url, name: resource.name.clone(), resource: Some(resource) }
}

fn two_backends() -> Vec<Update> {
    vec![cluster("a"), cluster("b"), endpoints("a", "10.0.0.1"), endpoints("b", "10.0.0.2")]
}

struct Harness {
    store: Arc<SnapshotStore>,
    clients: Arc<Clients>,
    log: Arc<PushLog>,
    addr: SocketAddr,
}

async fn serve(updates: Vec<Update>) -> Harness {
    let store = Arc::new(SnapshotStore::new());
    store.publish(updates);
    let server = AdsServer::new(Arc::clone(&store));
    let (clients, log) = (server.clients(), server.push_log());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let service = server.into_service();
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Harness { store, clients, log, addr }
}

impl Harness {
    async fn client(&self) -> AggregatedDiscoveryServiceClient<Channel> {
        AggregatedDiscoveryServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }

    async fn delta(&self, node: &str) -> DeltaClient {
        let (tx, rx) = mpsc::channel(16);
        let mut client = self.client().await;
        let rx = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("delta stream")
            .into_inner();
        DeltaClient { tx, rx, node: Some(node.to_string()) }
    }

    async fn sotw(&self, node: &str) -> SotwClient {
        let (tx, rx) = mpsc::channel(16);
        let mut client = self.client().await;
        let rx = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("sotw stream")
            .into_inner();
        SotwClient { tx, rx, node: Some(node.to_string()) }
    }

    fn client_info(&self, node: &str) -> ClientInfo {
        let list = self.clients.list();
        list.into_iter().find(|c| c.node_id == node).unwrap_or_else(|| panic!("{node} not listed"))
    }

    /// Waits until the registry satisfies `done` (streams end asynchronously).
    async fn wait_for_clients(&self, done: impl Fn(&[ClientInfo]) -> bool) {
        let waited = tokio::time::timeout(WAIT, async {
            while !done(&self.clients.list()) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        waited.await.unwrap_or_else(|_| panic!("clients never settled: {:?}", self.clients.list()));
    }
}

fn node(id: &mut Option<String>) -> Option<Node> {
    // Envoy names itself in the first request only.
    id.take().map(|id| Node { id, ..Default::default() })
}

fn error(message: &str) -> Option<Status> {
    Some(Status { code: 3, message: message.into(), details: vec![] })
}

async fn recv<T: std::fmt::Debug>(rx: &mut Streaming<T>) -> T {
    match tokio::time::timeout(WAIT, rx.message()).await {
        Ok(Ok(Some(message))) => message,
        Ok(other) => panic!("stream ended: {other:?}"),
        Err(_) => panic!("no response within {WAIT:?}"),
    }
}

struct DeltaClient {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
    node: Option<String>,
}

impl DeltaClient {
    async fn send(&mut self, req: DeltaDiscoveryRequest) {
        let req = DeltaDiscoveryRequest { node: node(&mut self.node), ..req };
        self.tx.send(req).await.expect("request stream open");
    }

    async fn subscribe(&mut self, type_url: TypeUrl, names: &[&str]) {
        self.send(delta_sub(type_url, names)).await;
    }

    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        recv(&mut self.rx).await
    }

    async fn ack(&mut self, resp: &DeltaDiscoveryResponse) {
        let req = DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        };
        self.send(req).await;
    }

    /// Subscribes, receives, ACKs.
    async fn fetch(&mut self, type_url: TypeUrl, names: &[&str]) -> DeltaDiscoveryResponse {
        self.subscribe(type_url, names).await;
        let resp = self.recv().await;
        assert_eq!(resp.type_url, type_url.as_str());
        self.ack(&resp).await;
        resp
    }
}

fn delta_sub(type_url: TypeUrl, names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.as_str().into(),
        resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

fn names(resp: &DeltaDiscoveryResponse) -> Vec<&str> {
    resp.resources.iter().map(|r| r.name.as_str()).collect()
}

struct SotwClient {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
    node: Option<String>,
}

impl SotwClient {
    async fn send(
        &mut self,
        type_url: TypeUrl,
        names: &[&str],
        answering: Option<&DiscoveryResponse>,
    ) {
        let req = DiscoveryRequest {
            node: node(&mut self.node),
            type_url: type_url.as_str().into(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            version_info: answering.map(|r| r.version_info.clone()).unwrap_or_default(),
            response_nonce: answering.map(|r| r.nonce.clone()).unwrap_or_default(),
            ..Default::default()
        };
        self.tx.send(req).await.expect("request stream open");
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        recv(&mut self.rx).await
    }
}

/// Envoy's start: every cluster by wildcard, then the endpoints of each by name.
async fn start(client: &mut DeltaClient) {
    let clusters = client.fetch(CDS, &[]).await;
    assert_eq!(names(&clusters), ["a", "b"]);
    assert!(clusters.removed_resources.is_empty());
    let endpoints = client.fetch(EDS, &["a", "b"]).await;
    assert_eq!(names(&endpoints), ["a", "b"]);
    let body = endpoints.resources[0].resource.as_ref().map(|any| any.type_url.as_str());
    assert_eq!(body, Some(EDS.as_str()));
}

#[tokio::test]
async fn delta_wildcard_clusters_then_endpoints_by_name() {
    let h = serve(two_backends()).await;
    let mut envoy = h.delta("envoy-1").await;
    start(&mut envoy).await;

    let info = h.client_info("envoy-1");
    assert_eq!(info.kind, StreamKind::Delta);
    let types: Vec<(TypeUrl, bool, Vec<String>)> =
        info.types.iter().map(|t| (t.type_url, t.wildcard, t.subscribed.clone())).collect();
    assert_eq!(types, [(CDS, true, vec![]), (EDS, false, vec!["a".into(), "b".into()])]);
}

#[tokio::test]
async fn changing_one_backend_address_pushes_only_its_endpoints() {
    let h = serve(two_backends()).await;
    let mut envoy = h.delta("envoy-1").await;
    start(&mut envoy).await;

    h.store.publish(vec![endpoints("b", "10.0.0.9")]);
    let revision = h.store.load().revision;
    let resp = envoy.recv().await;
    assert_eq!(resp.type_url, EDS.as_str());
    assert_eq!(names(&resp), ["b"]);
    assert!(resp.removed_resources.is_empty());

    let pushed: Vec<_> = h.log.records().into_iter().filter(|r| r.revision == revision).collect();
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    assert_eq!((pushed[0].type_url, pushed[0].names.clone()), (EDS, vec!["b".to_string()]));
    assert_eq!(pushed[0].node_id, "envoy-1");
    assert_eq!(pushed[0].nonce, resp.nonce);
}

#[tokio::test]
async fn removing_a_cluster_sends_removed_resources() {
    let h = serve(two_backends()).await;
    let mut envoy = h.delta("envoy-1").await;
    start(&mut envoy).await;

    h.store.publish(vec![Update { type_url: CDS, name: "b".into(), resource: None }]);
    let resp = envoy.recv().await;
    assert_eq!(resp.type_url, CDS.as_str());
    assert!(resp.resources.is_empty());
    assert_eq!(resp.removed_resources, ["b"]);
}

#[tokio::test]
async fn reconnect_with_current_versions_receives_only_what_is_stale() {
    let h = serve(two_backends()).await;
    let mut envoy = h.delta("envoy-1").await;
    let held_clusters = held(&envoy.fetch(CDS, &[]).await);
    let held_endpoints = held(&envoy.fetch(EDS, &["a", "b"]).await);
    drop(envoy);
    // While Envoy is away, one backend moves.
    h.store.publish(vec![endpoints("b", "10.0.0.9")]);

    let mut envoy = h.delta("envoy-1").await;
    let req =
        DeltaDiscoveryRequest { initial_resource_versions: held_clusters, ..delta_sub(CDS, &[]) };
    envoy.send(req).await;
    let req = DeltaDiscoveryRequest {
        initial_resource_versions: held_endpoints,
        ..delta_sub(EDS, &["a", "b"])
    };
    envoy.send(req).await;
    // The first message is the stale endpoints: nothing was sent for the clusters.
    let resp = envoy.recv().await;
    assert_eq!((resp.type_url.as_str(), names(&resp)), (EDS.as_str(), vec!["b"]));
}

/// What Envoy holds after a response: name -> version.
fn held(resp: &DeltaDiscoveryResponse) -> HashMap<String, String> {
    resp.resources.iter().map(|r| (r.name.clone(), r.version.clone())).collect()
}

#[tokio::test]
async fn nack_keeps_the_accepted_version_and_shows_in_clients() {
    let h = serve(two_backends()).await;
    let mut envoy = h.delta("envoy-1").await;
    start(&mut envoy).await;
    let accepted = h.store.load().get(CDS, "a").map(|r| r.version.clone());

    h.store.publish(vec![cluster_v2("a")]);
    let clusters = envoy.recv().await;
    assert_eq!((clusters.type_url.as_str(), names(&clusters)), (CDS.as_str(), vec!["a"]));
    // Its endpoints follow, since Envoy re-initialises an updated cluster.
    let endpoints = envoy.recv().await;
    assert_eq!((endpoints.type_url.as_str(), names(&endpoints)), (EDS.as_str(), vec!["a"]));
    envoy.ack(&endpoints).await;
    let nack = DeltaDiscoveryRequest {
        type_url: clusters.type_url.clone(),
        response_nonce: clusters.nonce.clone(),
        error_detail: error("cluster a: bad config"),
        ..Default::default()
    };
    envoy.send(nack).await;
    // Requests are handled in order: once this is answered the NACK has been handled, and the
    // rejected cluster was not sent again in between.
    envoy.subscribe(EDS, &["b"]).await;
    let resp = envoy.recv().await;
    assert_eq!((resp.type_url.as_str(), names(&resp)), (EDS.as_str(), vec!["b"]));

    let info = h.client_info("envoy-1");
    let cds = info.types.iter().find(|t| t.type_url == CDS).expect("CDS state");
    let last_nack = cds.last_nack.as_ref().expect("NACK recorded");
    assert_eq!(last_nack.error, "cluster a: bad config");
    assert_eq!(last_nack.nonce, clusters.nonce);
    assert_eq!(cds.acked.get("a"), accepted.as_ref());
}

#[tokio::test]
async fn sotw_stream_receives_whole_sets_and_nothing_on_ack() {
    let h = serve(two_backends()).await;
    let mut envoy = h.sotw("envoy-sotw").await;
    envoy.send(CDS, &[], None).await;
    let clusters = envoy.recv().await;
    assert_eq!((clusters.type_url.as_str(), clusters.resources.len()), (CDS.as_str(), 2));
    envoy.send(CDS, &[], Some(&clusters)).await;
    envoy.send(EDS, &["a"], None).await;
    // The next message answers the endpoints request: the ACK got nothing.
    let eps = envoy.recv().await;
    assert_eq!((eps.type_url.as_str(), eps.resources.len()), (EDS.as_str(), 1));
    envoy.send(EDS, &["a", "b"], Some(&eps)).await;
    let eps = envoy.recv().await;
    assert_eq!(eps.resources.len(), 2);
    envoy.send(EDS, &["a", "b"], Some(&eps)).await;

    h.store.publish(vec![endpoints("b", "10.0.0.9")]);
    let revision = h.store.load().revision;
    let update = envoy.recv().await;
    assert_eq!((update.type_url.as_str(), update.resources.len()), (EDS.as_str(), 2));
    assert_ne!(update.version_info, eps.version_info);

    let pushed: Vec<_> = h.log.records().into_iter().filter(|r| r.revision == revision).collect();
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    assert_eq!(pushed[0].kind, StreamKind::Sotw);
    assert_eq!(pushed[0].names, ["a", "b"]);
    assert_eq!(h.client_info("envoy-sotw").kind, StreamKind::Sotw);
}

#[tokio::test]
async fn every_connected_envoy_receives_the_push() {
    let h = serve(two_backends()).await;
    let mut one = h.delta("envoy-1").await;
    let mut two = h.delta("envoy-2").await;
    start(&mut one).await;
    start(&mut two).await;

    h.store.publish(vec![endpoints("a", "10.0.0.7")]);
    let revision = h.store.load().revision;
    for envoy in [&mut one, &mut two] {
        let resp = envoy.recv().await;
        assert_eq!((resp.type_url.as_str(), names(&resp)), (EDS.as_str(), vec!["a"]));
    }
    let mut nodes: Vec<_> =
        h.log.records().into_iter().filter(|r| r.revision == revision).map(|r| r.node_id).collect();
    nodes.sort();
    assert_eq!(nodes, ["envoy-1", "envoy-2"]);
}

#[tokio::test]
async fn a_closed_stream_leaves_the_registry() {
    let h = serve(two_backends()).await;
    let mut one = h.delta("envoy-1").await;
    let mut two = h.sotw("envoy-2").await;
    one.fetch(CDS, &[]).await;
    two.send(CDS, &[], None).await;
    two.recv().await;
    assert_eq!(h.clients.list().len(), 2);

    drop(one);
    h.wait_for_clients(|c| c.len() == 1 && c[0].node_id == "envoy-2").await;
    drop(two);
    h.wait_for_clients(|c| c.is_empty()).await;
}

#[tokio::test]
async fn a_stream_without_node_id_is_refused() {
    let h = serve(two_backends()).await;
    let mut envoy = h.delta("").await;
    envoy.subscribe(CDS, &[]).await;
    match tokio::time::timeout(WAIT, envoy.rx.message()).await {
        Ok(Err(status)) => assert_eq!(status.code(), tonic::Code::InvalidArgument),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert!(h.clients.list().is_empty());
}
