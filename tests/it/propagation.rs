//! How edits reach Envoy: a burst of edits to a manifest converges to the last one in far fewer
//! pushes than edits, seen by a delta ADS client over real gRPC.

use std::time::Duration;

use aixds::xds::TypeUrl;
use envoy_types::pb::envoy::config::route::v3::ScopedRouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::admin::start_plain;
use crate::harness::write_atomic;

const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec: {gatewayClassName: aixds, listeners: [{name: http, protocol: HTTP, port: 1975}]}
";

/// A route matching `model`, its AIServiceBackend and its Backend.
fn unit(model: &str) -> String {
    format!(
        "apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: route}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {model}}}]}}]
    backendRefs: [{{name: asb}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: asb}}
spec: {{schema: {{name: OpenAI}}, backendRef: {{name: backend, group: gateway.envoyproxy.io, kind: Backend}}}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: backend}}
spec: {{endpoints: [{{ip: {{address: 127.0.0.9, port: 8000}}}}]}}
"
    )
}

const EDITS: usize = 1_000;

/// 1,000 edits a millisecond or so apart (a second or more of edits, so that batches are
/// applied while they come), each naming a new model: the client ends up with the scope of the
/// last one, having been pushed a model's scope at most once per 10 edits (the debounce
/// takes what arrives while a batch waits or is applied into the next batch), and never one
/// that goes back to an older edit.
#[tokio::test]
async fn a_burst_of_edits_converges_to_the_last_in_far_fewer_pushes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), GATEWAY).unwrap();
    let file = dir.path().join("unit.yaml");
    std::fs::write(&file, unit("model-0")).unwrap();
    let running = start_plain(dir.path()).await;

    let (tx, rx) = mpsc::channel(16);
    let mut client = AggregatedDiscoveryServiceClient::connect(format!(
        "http://{}",
        running.xds_addr.expect("xDS over TCP")
    ))
    .await
    .expect("connect");
    let mut stream = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .expect("delta stream")
        .into_inner();
    // Each edit's model has a routing scope: the wildcard subscription to scopes sees them all.
    let type_url = TypeUrl::ScopedRouteConfiguration.as_str().to_string();
    tx.send(DeltaDiscoveryRequest {
        node: Some(envoy_types::pb::envoy::config::core::v3::Node {
            id: "burst".into(),
            ..Default::default()
        }),
        type_url: type_url.clone(),
        ..Default::default()
    })
    .await
    .unwrap();

    // The models each push names, in order; ACKs every push.
    let (pushed_tx, mut pushed) = mpsc::unbounded_channel::<usize>();
    tokio::spawn(async move {
        while let Ok(Some(resp)) = stream.message().await {
            for resource in &resp.resources {
                let any = resource.resource.as_ref().expect("a body");
                let scope = ScopedRouteConfiguration::decode(any.value.as_slice()).unwrap();
                // The default scope names no model.
                let Some((_, model)) = scope.name.split_once("/model/model-") else { continue };
                let _ = pushed_tx.send(model.parse().expect("a model's number"));
            }
            let ack = DeltaDiscoveryRequest {
                type_url: resp.type_url.clone(),
                response_nonce: resp.nonce.clone(),
                ..Default::default()
            };
            if tx.send(ack).await.is_err() {
                return;
            }
        }
    });
    let first = tokio::time::timeout(Duration::from_secs(10), pushed.recv()).await;
    assert_eq!(first.expect("the first push").unwrap(), 0);

    let batches_before = *running.batches.borrow();
    for i in 1..=EDITS {
        write_atomic(&file, unit(&format!("model-{i}")));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut seen = vec![];
    while seen.last() != Some(&EDITS) {
        match tokio::time::timeout(Duration::from_secs(10), pushed.recv()).await {
            Ok(Some(model)) => seen.push(model),
            _ => panic!("no push of model-{EDITS} within 10 s; pushed {seen:?}"),
        }
    }
    // Nothing older comes after the last edit.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(model) = pushed.try_recv() {
        seen.push(model);
    }
    assert_eq!(seen.last(), Some(&EDITS), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "pushes go forward only: {seen:?}");
    assert!(seen.len() <= EDITS / 10, "{} pushes for {EDITS} edits: {seen:?}", seen.len());
    let batches = *running.batches.borrow() - batches_before;
    assert!(batches as usize <= EDITS / 10, "{batches} batches for {EDITS} edits");
    running.shutdown().await;
}
