//! Clusters: one per usable AIServiceBackend, and one per InferencePool a route names directly.
//!
//! Takes: an AIServiceBackend (with the Backend or InferencePool it names) or an InferencePool.
//! Gives: the Envoy Cluster and, when the cluster uses EDS, its ClusterLoadAssignment of the same
//! name (so that an address change re-sends only the assignment).
//!
//! - Backend with DNS names: STRICT_DNS with the endpoints inline.
//! - Backend with IPs: EDS.
//! - Backend with a unix socket: STATIC with the endpoints inline (EDS would serve the same
//!   addresses, but pipes are rare enough that one resource is simpler to read).
//! - InferencePool: EDS over its ready pods, load balanced by the endpoint picker's choice
//!   (`override_host`); and a cluster for the pool's picker (`picker/{ns}/{name}`).
//!
//! And one per route rule whose backendRefs have several priorities (`rule/{ns}/{route}/{i}`):
//! the rule's backends as Envoy priority levels, so that retries fall back (see [`fallback`]).
//!
//! A Backend on port 443 gets upstream TLS, verified against the system CAs and the hostname.
//! An AIServiceBackend's cluster speaks HTTP/1.1 through the translation ext_proc's upstream
//! phase (see [`super::extproc`]); a pool's speaks its `appProtocol` (`kubernetes.io/h2c`:
//! HTTP/2 with prior knowledge).

use std::collections::{BTreeSet, HashMap};

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, DataSource, Locality, Metadata, TransportSocket, address, data_source,
    transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher, UpstreamTlsContext,
    common_tls_context, subject_alt_name_matcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{Duration, Struct, UInt32Value, Value, value};
use envoy_types::util::pack_any;
use prost::{Message, Name};

use super::extproc::UpstreamHttp;
use super::{
    BODY_BUFFER_LIMIT, ads_config_source, canonical, endpoint, extproc, picker, resource_from_bytes,
};
use crate::api::{
    AppProtocol, BackendEndpoint, BackendSpec, FailureMode, InferencePoolSpec, Kind, ObjectKey,
    Spec,
};
use crate::graph::{Graph, Node, RefKind};
use crate::wire::{backend_cluster_name, pool_cluster_name};
use crate::xds::Resource;

/// The filter metadata namespace the AI gateway's ext_proc reads a cluster's backend from.
const METADATA_NAMESPACE: &str = "aixds";
/// The endpoint metadata namespace Envoy matches `transport_socket_matches` against.
const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
const CONNECT_TIMEOUT_SECONDS: i64 = 10;
/// The endpoint picker port when `endpointPickerRef` names none: the Inference Extension's.
const DEFAULT_PICKER_PORT: u16 = 9002;

/// A compiled cluster and, for EDS clusters, its load assignment.
pub(super) struct Compiled {
    pub cluster: Resource,
    pub load_assignment: Option<Resource>,
}

/// The fallback cluster of a route's rule: `rule/{namespace}/{route}/{rule index}`.
pub(super) fn fallback_cluster_name(route: &ObjectKey, rule: usize) -> String {
    format!("rule/{}/{rule}", route.path())
}

/// The cluster a route's backendRef to `target` uses, if that target compiles to one.
pub(super) fn cluster_for(graph: &Graph, target: &ObjectKey) -> Option<String> {
    match target.kind {
        Kind::AIServiceBackend => {
            backend_target(graph, target).map(|_| backend_cluster_name(target))
        }
        Kind::InferencePool => accepted(graph, target).then(|| pool_cluster_name(target)),
        _ => None,
    }
}

/// The InferencePool a backendRef's `target` sends to: the pool itself, or the one behind an
/// AIServiceBackend.
pub(super) fn pool_of(graph: &Graph, target: &ObjectKey) -> Option<ObjectKey> {
    match target.kind {
        Kind::InferencePool => Some(target.clone()),
        Kind::AIServiceBackend => backend_target(graph, target)
            .filter(|n| n.key.kind == Kind::InferencePool)
            .map(|n| n.key.clone()),
        _ => None,
    }
}

/// Where an InferencePool's endpoint picker is: its `endpointPickerRef` Service's cluster IP,
/// or else the Service's cluster DNS name, on the referenced port.
pub(super) struct PickerAddress {
    /// The `endpointPickerRef` Service.
    pub service: ObjectKey,
    pub host: String,
    pub port: u16,
    /// The Service port's `appProtocol` asks for TLS (`https`): the picker's certificate is not
    /// checked, as pickers commonly serve a self-signed one.
    pub tls: bool,
    pub failure_mode: FailureMode,
}

impl PickerAddress {
    /// The gRPC `:authority` Envoy sends the picker.
    pub fn authority(&self) -> String {
        picker::authority(&self.host, self.port)
    }
}

/// The picker of `pool`: `None` when it names none; with no host when its Service does not
/// exist or lacks the port (the pool's `ResolvedRefs` says so, and its routes fail closed).
pub(super) fn picker_address(graph: &Graph, pool: &ObjectKey) -> Option<PickerAddress> {
    let Spec::InferencePool(spec) = &graph.object(pool)?.spec else { return None };
    let picker = spec.endpoint_picker_ref.as_ref()?;
    let port = picker.port.as_ref().map_or(DEFAULT_PICKER_PORT, |p| p.number);
    let service = ObjectKey::new(Kind::Service, &pool.namespace, &picker.name);
    let found = graph.object(&service).and_then(|o| match &o.spec {
        Spec::Service(svc) => svc.ports.iter().find(|p| p.port == port).map(|p| (svc, p)),
        _ => None,
    });
    let Some((svc, svc_port)) = found else {
        return Some(PickerAddress {
            service,
            host: String::new(),
            port,
            tls: false,
            failure_mode: FailureMode::FailClose,
        });
    };
    let host = match svc.cluster_ip.as_deref() {
        Some(ip) if ip.parse::<std::net::IpAddr>().is_ok() => ip.to_string(),
        _ => format!("{}.{}.svc.cluster.local", picker.name, pool.namespace),
    };
    let tls = svc_port.app_protocol.as_deref().is_some_and(|p| p.eq_ignore_ascii_case("https"));
    Some(PickerAddress { service, host, port, tls, failure_mode: picker.failure_mode })
}

/// The cluster of `pool`'s endpoint picker, when it names one that exists; over TLS with
/// `client_cert` when one is given.
pub(super) fn picker(
    graph: &Graph,
    pool: &ObjectKey,
    client_cert: Option<&crate::bootstrap::ClientCert>,
) -> Option<Resource> {
    if !accepted(graph, pool) {
        return None;
    }
    let address = picker_address(graph, pool).filter(|a| !a.host.is_empty())?;
    let name = picker::picker_cluster_name(pool);
    let cluster =
        picker::picker_cluster(&name, &address.host, address.port, address.tls, client_cert);
    Some(Resource::new(name, &cluster, vec![pool.clone(), address.service]))
}

fn accepted(graph: &Graph, key: &ObjectKey) -> bool {
    graph.node(key).is_some_and(Node::accepted)
}

/// The accepted Backend or InferencePool behind an accepted AIServiceBackend.
fn backend_target<'g>(graph: &'g Graph, key: &ObjectKey) -> Option<&'g Node> {
    if !accepted(graph, key) {
        return None;
    }
    graph
        .references(key)
        .into_iter()
        .find(|(kind, node)| {
            *kind == RefKind::BackendRef
                && matches!(node.key.kind, Kind::Backend | Kind::InferencePool)
        })
        .map(|(_, node)| node)
        .filter(|node| node.accepted())
}

pub(super) fn backend(graph: &Graph, key: &ObjectKey) -> Option<Compiled> {
    let object = graph.object(key)?;
    let Spec::AIServiceBackend(asb) = &object.spec else { return None };
    let target = backend_target(graph, key)?;
    let name = backend_cluster_name(key);
    let schema = match serde_json::to_value(asb.schema.name) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{:?}", asb.schema.name),
    };
    let metadata = [("backend", key.path()), ("schema", schema)];
    let mut sources = vec![key.clone(), target.key.clone()];
    let (mut cluster, cla, cla_sources, protocol) = match target.object.as_deref().map(|o| &o.spec)
    {
        Some(Spec::Backend(spec)) => {
            let tls = tls_policy(graph, &target.key);
            sources.extend(tls.map(|(policy, _)| policy.clone()));
            let sni = tls.map(|(_, hostname)| hostname);
            let (cluster, cla) = envoy_backend(&name, spec, sni);
            (cluster, cla, sources.clone(), UpstreamHttp::Http1)
        }
        Some(Spec::InferencePool(pool)) => {
            let (cla, pods) = endpoint::pool(&name, graph, &target.key, pool);
            let cla_sources = sources.iter().cloned().chain(pods).collect();
            (pool_eds_cluster(&name), Some(cla), cla_sources, pool_protocol(pool))
        }
        _ => return None,
    };
    // Every attempt to this backend passes the translation ext_proc's upstream phase.
    cluster.typed_extension_protocol_options = HashMap::from([(
        extproc::HTTP_PROTOCOL_OPTIONS.to_string(),
        extproc::upstream_protocol_options(&name, false, protocol),
    )]);
    cluster.per_connection_buffer_limit_bytes = Some(UInt32Value { value: BODY_BUFFER_LIMIT });
    Some(Compiled {
        cluster: encode(name.clone(), &cluster, &metadata, sources),
        load_assignment: cla.map(|cla| Resource::new(name, &cla, cla_sources)),
    })
}

/// One backendRef of a rule with fallback.
pub(super) struct Member {
    /// Its id, as [`crate::wire::route_backend_id`] makes it.
    pub route_backend: String,
    /// The AIServiceBackend it names.
    pub backend: ObjectKey,
    /// Its Envoy priority level: 0 for the rule's lowest `priority` value, 1 for the next...
    pub level: u32,
    pub weight: u32,
}

/// The cluster of a rule whose backendRefs have several priorities: every Backend endpoint of
/// every member, one locality per member at the member's priority level and weight, so that
/// Envoy sends to the lowest level and a retry (see the route's retry policy) to the next.
///
/// Each endpoint carries its member's id under the `envoy.transport_socket_match` metadata
/// namespace, key `route_backend`. That one key does two jobs: it picks the member's TLS
/// settings among the cluster's transport socket matches, and the upstream phase reads it
/// (the [`ROUTE_BACKEND_ATTRIBUTE`](crate::wire::ROUTE_BACKEND_ATTRIBUTE) attribute) to learn
/// which backend Envoy picked for an attempt. A single namespace with a single key also keeps
/// the encoding deterministic: prost writes protobuf maps in random order.
///
/// `None` when fewer than two priority levels have a usable Backend: nothing to fall back to,
/// and the route uses weighted clusters. Members behind an InferencePool are not supported here
/// (route.rs does not ask), nor are unix sockets next to DNS names.
pub(super) fn fallback(graph: &Graph, name: &str, members: &[Member]) -> Option<Resource> {
    let mut sources = Vec::new();
    let mut localities = Vec::new();
    let mut tls_matches = Vec::new();
    let mut dns = false;
    for member in members {
        let Some(target) = backend_target(graph, &member.backend) else { continue };
        let Some(Spec::Backend(spec)) = target.object.as_deref().map(|o| &o.spec) else {
            continue;
        };
        let tls = tls_policy(graph, &target.key);
        sources.extend([member.backend.clone(), target.key.clone()]);
        sources.extend(tls.map(|(policy, _)| policy.clone()));
        let id_struct = || Struct {
            fields: [(
                "route_backend".to_string(),
                Value { kind: Some(value::Kind::StringValue(member.route_backend.clone())) },
            )]
            .into(),
        };
        let metadata = Metadata {
            filter_metadata: [(TRANSPORT_SOCKET_MATCH.to_string(), id_struct())].into(),
            ..Default::default()
        };
        let assignment = endpoint::backend(name, spec);
        let mut lb_endpoints: Vec<LbEndpoint> =
            assignment.endpoints.into_iter().flat_map(|l| l.lb_endpoints).collect();
        for e in &mut lb_endpoints {
            e.metadata = Some(metadata.clone());
        }
        dns |= spec.endpoints.iter().any(|e| e.fqdn.is_some());
        if let Some(socket) = backend_tls(spec, tls.map(|(_, hostname)| hostname)) {
            tls_matches.push(cluster::TransportSocketMatch {
                name: member.route_backend.clone(),
                r#match: Some(id_struct()),
                transport_socket: Some(socket),
            });
        }
        localities.push(LocalityLbEndpoints {
            locality: Some(Locality {
                sub_zone: member.route_backend.clone(),
                ..Default::default()
            }),
            lb_endpoints,
            load_balancing_weight: Some(UInt32Value { value: member.weight }),
            priority: member.level,
            ..Default::default()
        });
    }
    if dns {
        for locality in &mut localities {
            locality.lb_endpoints.retain(|e| !is_pipe(e));
        }
    }
    localities.retain(|l| !l.lb_endpoints.is_empty());
    // Envoy wants priority levels without gaps: renumber those left.
    let levels: BTreeSet<u32> = localities.iter().map(|l| l.priority).collect();
    for locality in &mut localities {
        locality.priority = levels.range(..locality.priority).count() as u32;
    }
    if levels.len() < 2 {
        return None;
    }
    let discovery =
        if dns { cluster::DiscoveryType::StrictDns } else { cluster::DiscoveryType::Static };
    let cluster = Cluster {
        name: name.to_string(),
        connect_timeout: Some(connect_timeout()),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(discovery as i32)),
        dns_lookup_family: cluster::DnsLookupFamily::V4Only as i32,
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.to_string(),
            endpoints: localities,
            ..Default::default()
        }),
        // Without it Envoy ignores the locality weights within a priority level.
        common_lb_config: Some(cluster::CommonLbConfig {
            locality_config_specifier: Some(
                cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                    Default::default(),
                ),
            ),
            ..Default::default()
        }),
        transport_socket_matches: tls_matches,
        typed_extension_protocol_options: HashMap::from([(
            extproc::HTTP_PROTOCOL_OPTIONS.to_string(),
            extproc::upstream_protocol_options(name, true, UpstreamHttp::Http1),
        )]),
        per_connection_buffer_limit_bytes: Some(UInt32Value { value: BODY_BUFFER_LIMIT }),
        ..Default::default()
    };
    sources.sort();
    sources.dedup();
    Some(encode(name.to_string(), &cluster, &[], sources))
}

fn is_pipe(e: &LbEndpoint) -> bool {
    matches!(
        &e.host_identifier,
        Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(Address { address: Some(address::Address::Pipe(_)) }),
            ..
        }))
    )
}

/// The HTTP version of a pool's model servers: its `appProtocol`, HTTP/1.1 by default.
fn pool_protocol(pool: &InferencePoolSpec) -> UpstreamHttp {
    match pool.app_protocol() {
        AppProtocol::Http => UpstreamHttp::Http1,
        AppProtocol::H2c => UpstreamHttp::H2c,
    }
}

/// The cluster of an InferencePool named directly by an accepted route.
pub(super) fn pool(graph: &Graph, key: &ObjectKey) -> Option<Compiled> {
    let Spec::InferencePool(pool) = &graph.object(key)?.spec else { return None };
    // A route attached to no listener (its Gateways another controller's) sends nothing; one
    // without parentRefs serves every listener.
    let used = graph.referrers(key).into_iter().any(|(kind, node)| {
        let spec = node.object.as_deref().and_then(|o| o.spec.route());
        let everywhere = spec.is_some_and(|(parent_refs, _)| parent_refs.is_empty());
        let attached = everywhere || node.parents().iter().any(|p| !p.attached.is_empty());
        kind == RefKind::BackendRef
            && node.key.kind == Kind::AIGatewayRoute
            && node.accepted()
            && attached
    });
    if !used || !accepted(graph, key) {
        return None;
    }
    let name = pool_cluster_name(key);
    let (cla, pods) = endpoint::pool(&name, graph, key, pool);
    let cla_sources = std::iter::once(key.clone()).chain(pods).collect();
    // A pool named directly speaks OpenAI, through the upstream phase like any backend.
    let mut cluster = pool_eds_cluster(&name);
    cluster.typed_extension_protocol_options = HashMap::from([(
        extproc::HTTP_PROTOCOL_OPTIONS.to_string(),
        extproc::upstream_protocol_options(&name, false, pool_protocol(pool)),
    )]);
    cluster.per_connection_buffer_limit_bytes = Some(UInt32Value { value: BODY_BUFFER_LIMIT });
    Some(Compiled {
        cluster: encode(name.clone(), &cluster, &[], vec![key.clone()]),
        load_assignment: Some(Resource::new(name, &cla, cla_sources)),
    })
}

/// The cluster an HTTPRoute's backendRef to a Service port uses: `svc/{namespace}/{name}/{port}`.
pub(super) fn service_cluster_name(key: &ObjectKey, port: u16) -> String {
    format!("{}{port}", service_cluster_prefix(key))
}

/// What the names of a Service's clusters start with: `svc/{namespace}/{name}/`.
pub(super) fn service_cluster_prefix(key: &ObjectKey) -> String {
    format!("svc/{}/", key.path())
}

/// The cluster an HTTPRoute's backendRef to an InferencePool uses: `httppool/{namespace}/{name}`.
/// It is the pool's cluster without the translation ext_proc (HTTPRoutes pass requests as they
/// are), so an AIGatewayRoute's `pool/...` cluster and this one can serve one pool side by side.
pub(super) fn http_pool_cluster_name(key: &ObjectKey) -> String {
    format!("httppool/{}", key.path())
}

/// The cluster an HTTPRoute's backendRef to an Envoy Gateway Backend uses:
/// `backend/{namespace}/{name}`.
pub(super) fn http_backend_cluster_name(key: &ObjectKey) -> String {
    format!("backend/{}", key.path())
}

/// The cluster an HTTPRoute's backendRef to `target` (on `port`, for a Service) uses, if the
/// target compiles to one: a Service with that port, an accepted InferencePool, an accepted
/// Backend.
pub(super) fn http_cluster_for(
    graph: &Graph,
    target: &ObjectKey,
    port: Option<u16>,
) -> Option<String> {
    let object = graph.object(target)?;
    match &object.spec {
        Spec::Service(svc) => {
            let port = port?;
            svc.ports.iter().any(|p| p.port == port).then(|| service_cluster_name(target, port))
        }
        Spec::InferencePool(_) => accepted(graph, target).then(|| http_pool_cluster_name(target)),
        Spec::Backend(_) => accepted(graph, target).then(|| http_backend_cluster_name(target)),
        _ => None,
    }
}

/// The clusters of `target` (a Service, InferencePool or Backend) that accepted, attached
/// HTTPRoutes use, by name: one per Service port they name.
pub(super) fn http_target(graph: &Graph, target: &ObjectKey) -> Vec<(String, Compiled)> {
    let Some(object) = graph.object(target) else { return Vec::new() };
    let mut ports: BTreeSet<Option<u16>> = BTreeSet::new();
    for (kind, node) in graph.referrers(target) {
        let Some(Spec::HTTPRoute(route)) = node.object.as_deref().map(|o| &o.spec) else {
            continue;
        };
        // A route no listener took (its Gateways missing, or another controller's) sends no
        // traffic: its backends need no cluster on its account.
        let attached = node.parents().iter().any(|p| !p.attached.is_empty());
        if kind != RefKind::BackendRef
            || !node.accepted()
            || !attached
            || !graph.reference_permitted(&node.key, target)
        {
            continue;
        }
        let refs = route.rules.iter().flat_map(|r| r.all_backend_refs());
        for b in refs {
            if crate::graph::http_backend_key(&node.key, b).as_ref() == Ok(target) {
                ports.insert(b.port);
            }
        }
    }
    if ports.is_empty() {
        return Vec::new();
    }
    let sources = vec![target.clone()];
    match &object.spec {
        Spec::Service(svc) => {
            let slices: Vec<(&ObjectKey, &crate::api::EndpointSliceSpec)> = graph
                .references(target)
                .into_iter()
                .filter(|(kind, _)| *kind == RefKind::Selects)
                .filter_map(|(_, node)| match node.object.as_deref().map(|o| &o.spec) {
                    Some(Spec::EndpointSlice(slice)) => Some((&node.key, slice)),
                    _ => None,
                })
                .collect();
            ports
                .into_iter()
                .flatten()
                .filter_map(|port| {
                    let service_port = svc.ports.iter().find(|p| p.port == port)?;
                    Some(service_cluster(target, svc, service_port, &slices))
                })
                .collect()
        }
        Spec::InferencePool(pool) if accepted(graph, target) => {
            let name = http_pool_cluster_name(target);
            let (cla, pods) = endpoint::pool(&name, graph, target, pool);
            let cla_sources = std::iter::once(target.clone()).chain(pods).collect();
            let mut cluster = pool_eds_cluster(&name);
            cluster.typed_extension_protocol_options = HashMap::from([(
                extproc::HTTP_PROTOCOL_OPTIONS.to_string(),
                extproc::plain_protocol_options(pool_protocol(pool)),
            )]);
            let compiled = Compiled {
                cluster: encode(name.clone(), &cluster, &[], sources),
                load_assignment: Some(Resource::new(name.clone(), &cla, cla_sources)),
            };
            vec![(name, compiled)]
        }
        Spec::Backend(spec) if accepted(graph, target) => {
            let name = http_backend_cluster_name(target);
            let tls = tls_policy(graph, target);
            let mut sources = sources;
            sources.extend(tls.map(|(policy, _)| policy.clone()));
            let (cluster, cla) = envoy_backend(&name, spec, tls.map(|(_, hostname)| hostname));
            let compiled = Compiled {
                cluster: encode(name.clone(), &cluster, &[], sources.clone()),
                load_assignment: cla.map(|cla| Resource::new(name.clone(), &cla, sources)),
            };
            vec![(name, compiled)]
        }
        _ => Vec::new(),
    }
}

/// The cluster of one Service port: its EndpointSlices' ready endpoints over EDS when it has
/// slices (as in a cluster), else its `clusterIP` (or, headless, its DNS name) on the port.
fn service_cluster(
    target: &ObjectKey,
    svc: &crate::api::ServiceSpec,
    service_port: &crate::api::ServicePort,
    slices: &[(&ObjectKey, &crate::api::EndpointSliceSpec)],
) -> (String, Compiled) {
    let port = service_port.port;
    let name = service_cluster_name(target, port);
    let port_name = service_port.name.as_deref().unwrap_or("");
    let ready: Vec<(Vec<&str>, u16, Option<&str>)> =
        slices.iter().filter_map(|(_, slice)| slice.ready(port_name)).collect();
    let app_protocol = service_port
        .app_protocol
        .as_deref()
        .or_else(|| ready.iter().find_map(|(_, _, protocol)| *protocol));
    let protocol = match app_protocol {
        Some(crate::api::H2C_APP_PROTOCOL) => UpstreamHttp::H2c,
        _ => UpstreamHttp::Http1,
    };
    let options = HashMap::from([(
        extproc::HTTP_PROTOCOL_OPTIONS.to_string(),
        extproc::plain_protocol_options(protocol),
    )]);
    let sources = vec![target.clone()];
    if !slices.is_empty() {
        let addresses = ready
            .iter()
            .flat_map(|(addresses, port, _)| addresses.iter().map(|a| endpoint::socket(a, *port)))
            .collect();
        let cla = endpoint::assignment(&name, addresses);
        let cla_sources =
            sources.iter().cloned().chain(slices.iter().map(|(k, _)| (*k).clone())).collect();
        let cluster = Cluster { typed_extension_protocol_options: options, ..eds_cluster(&name) };
        let compiled = Compiled {
            cluster: encode(name.clone(), &cluster, &[], sources),
            load_assignment: Some(Resource::new(name.clone(), &cla, cla_sources)),
        };
        return (name, compiled);
    }
    let host = match svc.cluster_ip.as_deref() {
        Some(ip) if ip.parse::<std::net::IpAddr>().is_ok() => ip.to_string(),
        _ => format!("{}.{}.svc.cluster.local", target.name, target.namespace),
    };
    let ip = host.parse::<std::net::IpAddr>().is_ok();
    let discovery =
        if ip { cluster::DiscoveryType::Static } else { cluster::DiscoveryType::StrictDns };
    let cluster = Cluster {
        name: name.clone(),
        connect_timeout: Some(connect_timeout()),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(discovery as i32)),
        dns_lookup_family: if ip { 0 } else { cluster::DnsLookupFamily::V4Only as i32 },
        load_assignment: Some(endpoint::assignment(&name, vec![endpoint::socket(&host, port)])),
        typed_extension_protocol_options: options,
        ..Default::default()
    };
    let compiled =
        Compiled { cluster: encode(name.clone(), &cluster, &[], sources), load_assignment: None };
    (name, compiled)
}

/// The accepted BackendTLSPolicy that targets `backend`, with the hostname it asks for.
fn tls_policy<'g>(graph: &'g Graph, backend: &ObjectKey) -> Option<(&'g ObjectKey, &'g str)> {
    graph.targeting(backend).into_iter().find_map(|node| {
        let Some(Spec::BackendTLSPolicy(policy)) = node.object.as_deref().map(|o| &o.spec) else {
            return None;
        };
        node.accepted().then_some((&node.key, policy.validation.hostname.as_str()))
    })
}

/// A Backend's cluster and, when it uses EDS, its load assignment. TLS is used when a
/// BackendTLSPolicy asks for it (`sni`: its hostname) or when the Backend listens on 443.
fn envoy_backend(
    name: &str,
    spec: &BackendSpec,
    sni: Option<&str>,
) -> (Cluster, Option<ClusterLoadAssignment>) {
    let cla = endpoint::backend(name, spec);
    let dns = spec.endpoints.iter().all(|e| e.fqdn.is_some());
    let pipe = spec.endpoints.iter().any(|e| e.unix.is_some());
    let mut cluster = if dns || pipe {
        let discovery =
            if dns { cluster::DiscoveryType::StrictDns } else { cluster::DiscoveryType::Static };
        Cluster {
            name: name.to_string(),
            connect_timeout: Some(connect_timeout()),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(discovery as i32)),
            load_assignment: Some(cla.clone()),
            ..Default::default()
        }
    } else {
        eds_cluster(name)
    };
    if dns {
        cluster.dns_lookup_family = cluster::DnsLookupFamily::V4Only as i32;
    }
    cluster.transport_socket = backend_tls(spec, sni);
    (cluster, (!dns && !pipe).then_some(cla))
}

/// TLS to a Backend, when a BackendTLSPolicy asks for it (`sni`: its hostname) or when the
/// Backend listens on 443.
fn backend_tls(spec: &BackendSpec, sni: Option<&str>) -> Option<TransportSocket> {
    let port =
        |e: &BackendEndpoint| e.fqdn.as_ref().map(|f| f.port).or(e.ip.as_ref().map(|i| i.port));
    if let Some(hostname) = sni {
        return Some(upstream_tls(&[hostname]));
    }
    if !spec.endpoints.iter().any(|e| port(e) == Some(443)) {
        return None;
    }
    let mut hostnames: Vec<&str> = spec
        .endpoints
        .iter()
        .filter_map(|e| e.fqdn.as_ref().map(|f| f.hostname.as_str()))
        .filter(|h| !h.is_empty())
        .collect();
    hostnames.dedup();
    Some(upstream_tls(&hostnames))
}

fn connect_timeout() -> Duration {
    Duration { seconds: CONNECT_TIMEOUT_SECONDS, nanos: 0 }
}

fn eds_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.to_string(),
        connect_timeout: Some(connect_timeout()),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads_config_source()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An InferencePool's pods, where the endpoint picker's choice decides (round robin without).
fn pool_eds_cluster(name: &str) -> Cluster {
    Cluster { load_balancing_policy: Some(picker::pool_load_balancing()), ..eds_cluster(name) }
}

/// TLS to the upstream, with SNI and certificate check against the first hostname (an IP-only
/// backend on 443 is checked against the CAs alone).
fn upstream_tls(hostnames: &[&str]) -> TransportSocket {
    let san = hostnames
        .iter()
        .map(|h| SubjectAltNameMatcher {
            san_type: subject_alt_name_matcher::SanType::Dns as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(h.to_string())),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let tls = UpstreamTlsContext {
        sni: hostnames.first().map(|h| h.to_string()).unwrap_or_default(),
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: Some(
                common_tls_context::ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: Some(DataSource {
                            specifier: Some(data_source::Specifier::Filename(
                                SYSTEM_CA_BUNDLE.into(),
                            )),
                            ..Default::default()
                        }),
                        match_typed_subject_alt_names: san,
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(tls))),
    }
}

/// Encodes `cluster` with `metadata` under [`METADATA_NAMESPACE`], in a fixed order (see
/// [`super::canonical`]), as field 25 (`metadata`) after the rest: protobuf reads fields in any
/// order, so Envoy sees the same message.
fn encode(
    name: String,
    cluster: &Cluster,
    metadata: &[(&str, String)],
    sources: Vec<ObjectKey>,
) -> Resource {
    debug_assert!(cluster.metadata.is_none(), "metadata is encoded separately");
    let mut bytes = cluster.encode_to_vec();
    if !metadata.is_empty() {
        let fields = canonical::string_struct(metadata.iter().map(|(k, v)| (*k, v.as_str())));
        let filter_metadata = canonical::map([(METADATA_NAMESPACE.to_string(), fields)]);
        canonical::append_field(&mut bytes, 25, &filter_metadata);
    }
    resource_from_bytes(name, Cluster::type_url(), bytes, sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_encoding_is_stable_and_decodes() {
        let cluster = eds_cluster("c");
        let metadata = [("schema", "OpenAI".to_string()), ("backend", "ns/b".to_string())];
        let a = encode("c".into(), &cluster, &metadata, Vec::new());
        let b = encode("c".into(), &cluster, &metadata, Vec::new());
        assert_eq!(a.version, b.version);
        let decoded = Cluster::decode(a.body.value.as_slice()).unwrap();
        let fields = &decoded.metadata.unwrap().filter_metadata[METADATA_NAMESPACE].fields;
        let s = |k: &str| match &fields[k].kind {
            Some(value::Kind::StringValue(s)) => s.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!((s("schema"), s("backend")), ("OpenAI".into(), "ns/b".into()));
        assert_eq!(decoded.name, "c");
    }
}
