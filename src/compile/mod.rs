//! The compiler: from the graph's objects to the Envoy resources served over ADS.
//!
//! Takes: the [`Graph`], and after each change the [`Affected`](crate::graph::Affected) keys.
//! Gives: [`Update`]s for Listeners, ScopedRouteConfigurations, RouteConfigurations, Clusters,
//! ClusterLoadAssignments and Secrets, removals included; and the [`Tables`] the services the
//! Envoy config calls read (the translation ext_proc's runtime config, the endpoint picker's
//! pools), kept the same way. Each
//! resource type has its own file of pure functions; this module only decides what to
//! recompile and remembers what it has emitted.
//!
//! What depends on what:
//! - a Listener per port of the accepted Gateways (or one default listener when there is no
//!   Gateway at all), each with routing scopes (`route.rs`): the default scope `route-{port}`,
//!   whose RouteConfiguration of the same name Envoy fetches by name, and one per model some
//!   route names exactly, `route-{port}/model/{model}`, holding its own routes (or, on a port
//!   where no route names the model, naming the default RouteConfiguration);
//! - a RouteConfiguration is assembled from cached per-route fragments, so a route change
//!   recompiles that route and re-assembles only what it touches: the scopes of the models
//!   whose routes it changed, on the ports it was or is attached to, or every scope of those
//!   ports when its routes that name no model exactly (or its hostnames, or where it attaches)
//!   changed. The indexes of which fragments name which model, and which have general routes,
//!   keep a scope's assembly to those fragments;
//! - a Cluster (and, when it uses EDS, a ClusterLoadAssignment of the same name) per usable
//!   AIServiceBackend, and per InferencePool that a route names directly;
//! - for HTTPRoutes (`http_route.rs`): their routes, ranked among each other in the
//!   RouteConfiguration after the AIGatewayRoutes' model routes, and a cluster per Service port,
//!   InferencePool and Backend they name, without the translation ext_proc (`svc/...`,
//!   `httppool/...`, `backend/...`), kept while an accepted HTTPRoute names it;
//! - a fallback Cluster per route rule whose backendRefs have several priorities, kept in the
//!   route's fragment: it depends on the route and on every backend the rule names, all of
//!   which put the route in the affected set;
//! - a Secret (SDS) per `kubernetes.io/tls` Secret that a served HTTPS listener names
//!   (`secret.rs`): it depends on the Secret and on the listeners, which a change of the Secret,
//!   of its Gateways or of a ReferenceGrant redoes. A rotated Secret that stays usable changes
//!   its SDS resource alone: the listeners name it, they do not hold it.
//!
//! - rate limits (`ratelimit.rs`): the BackendTrafficPolicies targeting a route (or its
//!   Gateways) and the QuotaPolicies on its backends are in the route's fragment, as per-route
//!   configs of the rate limit filters; a policy's change reaches its routes through the
//!   graph's `targetRef` walk (a Gateway's change reaches its routes).
//!
//! Every listener runs the translation ext_proc's router phase before the router (HTTPRoutes'
//! routes turn it off), then the local and global rate limit filters, and every
//! AIServiceBackend cluster its upstream phase (`extproc.rs`); the ext_proc and the global rate
//! limit filter call aixds over the bootstrap's `aixds-xds` cluster.
//!
//! Objects that are not accepted, or whose references do not resolve, produce nothing; whatever
//! referred to them leaves them out, and everything else compiles as usual. A backend whose
//! BackendSecurityPolicy gives no credential keeps its cluster (the upstream phase refuses its
//! requests, saying why) but is left out of every rule that has another backend.

mod access_log;
mod canonical;
mod cluster;
mod endpoint;
mod extproc;
mod http_route;
mod listener;
mod local_reply;
pub mod picker;
mod ratelimit;
mod route;
mod secret;

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, config_source::ConfigSourceSpecifier,
};
use envoy_types::pb::google::protobuf::Any;

use crate::api::{Kind, ObjectKey};
use crate::extproc::credentials::Credentials;
use crate::extproc::runtime::{RuntimeBuilder, RuntimeConfig};
use crate::graph::Graph;
use crate::picker::PoolTable;
use crate::xds::{Resource, TYPE_COUNT, TypeUrl, Update};

pub use listener::name as listener_name;

/// How much of one request or response Envoy holds per connection. The ext_proc phases buffer
/// whole request bodies, and AI request bodies (long prompts, images) are large.
const BODY_BUFFER_LIMIT: u32 = 50 * 1024 * 1024;

/// Settings that are not in any object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileOptions {
    /// The address every listener binds.
    pub listener_address: String,
    /// The port of the listener made when there is no Gateway.
    pub default_port: u16,
    /// Where Envoy writes a JSON access log line per request (see `access_log.rs`); `None`
    /// writes none.
    pub access_log: Option<String>,
    /// Envoy's client certificate (paths in Envoy's filesystem), presented to every endpoint
    /// picker over TLS: aixds's own picker requires it when aixds requires mutual TLS.
    pub picker_client_cert: Option<crate::bootstrap::ClientCert>,
    /// Refuse requests (503) when the rate limit service cannot answer, instead of letting
    /// them through.
    pub ratelimit_fail_closed: bool,
    /// How many proxies in front of Envoy append to `x-forwarded-for`: the client address
    /// (rate limits' `sourceCIDR`, the access log) is the one that many hops from the right.
    /// 0: the address of the connection, which a client cannot forge.
    pub xff_trusted_hops: u32,
    /// The GatewayClass `controllerName` whose Gateways aixds programs (see
    /// [`Graph::with_controller`]); `None` programs every Gateway.
    pub controller_name: Option<String>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            listener_address: "0.0.0.0".into(),
            default_port: 1975,
            access_log: None,
            picker_client_cert: None,
            ratelimit_fail_closed: false,
            xff_trusted_hops: 0,
            controller_name: None,
        }
    }
}

/// Compiles the graph, remembering enough to recompile only what a change affects.
#[derive(Debug, Default)]
pub struct Compiler {
    opts: CompileOptions,
    /// Every Gateway present → the listeners Envoy serves of it (none when it is not accepted
    /// or another controller's).
    gateways: BTreeMap<ObjectKey, Vec<listener::Served>>,
    /// Listener port → the listeners served there (the default listener alone when there is no
    /// Gateway).
    ports: BTreeMap<u16, Vec<listener::Served>>,
    /// One entry per AIGatewayRoute and HTTPRoute present in the graph, accepted or not.
    fragments: BTreeMap<ObjectKey, route::Fragment>,
    /// The fragments with routes in every scope ([`route::Fragment::general`]).
    general: BTreeSet<ObjectKey>,
    /// The HTTPRoutes' fragments ([`route::Fragment::ranked`]): their routes come after every
    /// AIGatewayRoute's, so a model's scope needs them only where its routes can fall through.
    ranked: BTreeSet<ObjectKey>,
    /// Model → the fragments with routes naming it exactly.
    by_model: BTreeMap<String, BTreeSet<ObjectKey>>,
    /// Model → how many fragments' rules name it exactly: each has a scope on every port.
    models: BTreeMap<String, usize>,
    /// The Secrets the served HTTPS listeners name: each has its SDS resource.
    certificates: BTreeSet<ObjectKey>,
    /// Names of the resources last emitted, per type, so that removals are sent only for what
    /// Envoy was given.
    emitted: [BTreeSet<String>; TYPE_COUNT],
    /// What the translation ext_proc reads, kept object by object.
    runtime: RuntimeBuilder,
    /// What the endpoint picker reads.
    pools: PoolTable,
}

/// The compiler's outputs besides the Envoy resources: what the services the Envoy config
/// calls read, published before Envoy hears of a change.
#[derive(Debug)]
pub struct Tables {
    pub runtime: RuntimeConfig,
    pub pools: PoolTable,
}

impl Compiler {
    pub fn new(opts: CompileOptions) -> Self {
        Compiler { opts, ..Default::default() }
    }

    /// The translation ext_proc's runtime config and the endpoint picker's pools after a batch
    /// that affected `affected` (`None`: every object, as at startup), updated from those
    /// objects alone like the Envoy resources. `credentials` are the token sources the runtime
    /// config hands from each config to the next.
    pub fn tables(
        &mut self,
        graph: &Graph,
        affected: Option<&[ObjectKey]>,
        credentials: &Credentials,
    ) -> Tables {
        let (runtime, pools) = match affected {
            None => (self.runtime.full(graph, credentials), PoolTable::from_graph(graph)),
            Some(keys) => {
                (self.runtime.update(graph, keys, credentials), self.pools.update(graph, keys))
            }
        };
        self.pools = pools.clone();
        Tables { runtime, pools }
    }

    /// Everything, for startup. Called again, it also removes what is no longer produced.
    pub fn full(&mut self, graph: &Graph) -> Vec<Update> {
        let stale = std::mem::take(&mut self.emitted);
        self.fragments.clear();
        self.general.clear();
        self.ranked.clear();
        self.by_model.clear();
        self.models.clear();
        let mut out = Vec::new();

        self.gateways = graph
            .objects()
            .filter_map(|o| Some((o.key.clone(), listener::gateway(graph, &o.key)?)))
            .collect();
        self.ports = listener::ports(&self.gateways, &self.opts);
        self.refresh_listeners(&mut out);
        let mut pools = BTreeSet::new();
        let mut targets = BTreeSet::new();
        for object in graph.objects() {
            match object.key.kind {
                Kind::AIGatewayRoute | Kind::HTTPRoute => {
                    let fragment = route::fragment(graph, &object.key, &self.ports);
                    for cluster in &fragment.clusters {
                        self.put(&mut out, TypeUrl::Cluster, cluster.clone());
                    }
                    targets.extend(fragment.targets.iter().cloned());
                    self.index(&object.key, &fragment, true);
                    self.fragments.insert(object.key.clone(), fragment);
                }
                Kind::AIServiceBackend => self.compile_backend(graph, &object.key, &mut out),
                Kind::InferencePool => {
                    pools.insert(object.key.clone());
                }
                _ => {}
            }
        }
        for pool in &pools {
            self.compile_pool(graph, pool, &mut out);
        }
        for target in &targets {
            self.compile_http_target(graph, target, &mut out);
        }
        self.certificates = self.served_certificates();
        let secrets: Vec<ObjectKey> = self.certificates.iter().cloned().collect();
        for key in &secrets {
            self.compile_secret(graph, key, &mut out);
        }
        let ports: BTreeSet<u16> = self.ports.keys().copied().collect();
        self.assemble_routes(&ports, &mut out);

        for type_url in TypeUrl::ALL {
            for name in &stale[type_url.index()] {
                if !self.emitted[type_url.index()].contains(name) {
                    out.push(Update { type_url, name: name.clone(), resource: None });
                }
            }
        }
        out
    }

    /// Only the outputs that depend on `affected` (from `Graph::apply`/`Graph::delete`),
    /// including removals of outputs no longer produced. Builds on the state [`Compiler::full`]
    /// leaves, so that comes first.
    pub fn update(&mut self, graph: &Graph, affected: &[ObjectKey]) -> Vec<Update> {
        let mut out = Vec::new();
        let mut dirty_ports: BTreeSet<u16> = BTreeSet::new();
        // A route that stops naming a pool is no longer its referrer in the graph, so the pools
        // to check come from the route's old fragment as well as from the affected set.
        let mut pools: BTreeSet<ObjectKey> = BTreeSet::new();
        let mut secrets: BTreeSet<ObjectKey> = BTreeSet::new();
        // Likewise the Services, pools and Backends HTTPRoutes name.
        let mut targets: BTreeSet<ObjectKey> = BTreeSet::new();
        // (port, model): scopes whose routes may have changed while the rest of the port's did
        // not.
        let mut dirty_scopes: BTreeSet<(u16, String)> = BTreeSet::new();

        // The graph lists a route's Gateways among what the route affects, so a Gateway here
        // has not necessarily changed: compare what it contributes before redoing listeners.
        let mut gateways_changed = false;
        for key in affected.iter().filter(|k| k.kind == Kind::Gateway) {
            let now = listener::gateway(graph, key);
            if now.as_ref() != self.gateways.get(key) {
                gateways_changed = true;
                match now {
                    Some(ports) => self.gateways.insert(key.clone(), ports),
                    None => self.gateways.remove(key),
                };
            }
        }
        if gateways_changed {
            let ports = listener::ports(&self.gateways, &self.opts);
            dirty_ports.extend(
                self.ports.keys().chain(ports.keys()).filter(|p| self.ports.get(p) != ports.get(p)),
            );
            // Routes without parentRefs attach to every listener, and nothing else would tell
            // them the listeners changed.
            for (key, fragment) in self.fragments.iter_mut() {
                let attachments = route::attachments(graph, key, &ports);
                if attachments != fragment.attachments {
                    dirty_ports.extend(fragment.attachments.keys().chain(attachments.keys()));
                    fragment.attachments = attachments;
                }
            }
            self.ports = ports;
            self.refresh_listeners(&mut out);
            let certificates = self.served_certificates();
            secrets.extend(self.certificates.symmetric_difference(&certificates).cloned());
            self.certificates = certificates;
        }
        for key in affected {
            match key.kind {
                Kind::AIServiceBackend => self.compile_backend(graph, key, &mut out),
                Kind::InferencePool => {
                    pools.insert(key.clone());
                    targets.insert(key.clone());
                }
                Kind::Service | Kind::Backend => {
                    targets.insert(key.clone());
                }
                Kind::Secret => {
                    secrets.insert(key.clone());
                }
                Kind::AIGatewayRoute | Kind::HTTPRoute => {
                    let new = graph
                        .object(key)
                        .is_some()
                        .then(|| route::fragment(graph, key, &self.ports));
                    let old = self.fragments.remove(key);
                    // The models either names, and whether some route named each before.
                    let models: Vec<(String, bool)> = old
                        .iter()
                        .chain(&new)
                        .flat_map(|f| &f.models)
                        .map(|m| (m.clone(), self.models.contains_key(m)))
                        .collect();
                    if let Some(old) = &old {
                        self.index(key, old, false);
                    }
                    if let Some(new) = new {
                        self.index(key, &new, true);
                        self.fragments.insert(key.clone(), new);
                    }
                    let new = self.fragments.get(key);
                    let kept: BTreeSet<&str> =
                        new.iter().flat_map(|f| &f.clusters).map(|c| c.name.as_str()).collect();
                    let gone: Vec<String> = old
                        .iter()
                        .flat_map(|f| &f.clusters)
                        .filter(|c| !kept.contains(c.name.as_str()))
                        .map(|c| c.name.clone())
                        .collect();
                    let fresh: Vec<Resource> =
                        new.iter().flat_map(|f| f.clusters.iter().cloned()).collect();
                    for fragment in old.iter().chain(new) {
                        // Whether a pool's (or an HTTPRoute backend's) cluster exists depends
                        // on the route's acceptance, which an unchanged fragment does not show.
                        pools.extend(fragment.pools.iter().cloned());
                        targets.extend(fragment.targets.iter().cloned());
                    }
                    // What changed decides what is re-sent: the general routes (or where the
                    // route attaches) are in every scope of its ports; a model's routes are in
                    // that model's scope alone.
                    let ports = old.iter().chain(new).flat_map(|f| f.attachments.keys());
                    let same = match (old.as_ref(), new) {
                        (Some(old), Some(new)) => old.same_general(new),
                        (None, None) => true,
                        _ => false,
                    };
                    if !same {
                        dirty_ports.extend(ports);
                    } else {
                        let none = BTreeMap::new();
                        let was = old.as_ref().map_or(&none, |f| &f.scoped);
                        let is = new.map_or(&none, |f| &f.scoped);
                        let changed: Vec<&String> = was
                            .keys()
                            .chain(is.keys())
                            .filter(|m| was.get(*m) != is.get(*m))
                            .collect();
                        for port in ports {
                            dirty_scopes.extend(changed.iter().map(|m| (*port, (*m).clone())));
                        }
                    }
                    for (model, was) in models {
                        // A model that gained or lost its scope, on every port.
                        if self.models.contains_key(&model) != was {
                            dirty_scopes.extend(self.ports.keys().map(|p| (*p, model.clone())));
                        }
                    }
                    for name in gone {
                        self.remove(&mut out, TypeUrl::Cluster, name);
                    }
                    for cluster in fresh {
                        self.put(&mut out, TypeUrl::Cluster, cluster);
                    }
                }
                _ => {}
            }
        }
        for pool in &pools {
            self.compile_pool(graph, pool, &mut out);
        }
        for target in &targets {
            self.compile_http_target(graph, target, &mut out);
        }
        for key in &secrets {
            self.compile_secret(graph, key, &mut out);
        }
        self.assemble_routes(&dirty_ports, &mut out);
        for (port, model) in &dirty_scopes {
            if self.ports.contains_key(port) && !dirty_ports.contains(port) {
                self.assemble_scope(*port, model, &mut out);
            }
        }
        out
    }

    /// Adds `fragment` of `key` to the scope indexes, or takes it out.
    fn index(&mut self, key: &ObjectKey, fragment: &route::Fragment, add: bool) {
        for (index, member) in [
            (&mut self.general, !fragment.general.is_empty()),
            (&mut self.ranked, !fragment.ranked.is_empty()),
        ] {
            if !member {
                continue;
            }
            match add {
                true => index.insert(key.clone()),
                false => index.remove(key),
            };
        }
        for model in fragment.scoped.keys() {
            let keys = self.by_model.entry(model.clone()).or_default();
            match add {
                true => keys.insert(key.clone()),
                false => keys.remove(key),
            };
            if keys.is_empty() {
                self.by_model.remove(model);
            }
        }
        for model in &fragment.models {
            let count = self.models.entry(model.clone()).or_default();
            match add {
                true => *count += 1,
                false => *count -= 1,
            }
            if *count == 0 {
                self.models.remove(model);
            }
        }
    }

    /// The clusters HTTPRoutes use of a Service (one per port named), an InferencePool or a
    /// Backend; those no longer used are removed.
    fn compile_http_target(&mut self, graph: &Graph, key: &ObjectKey, out: &mut Vec<Update>) {
        let prefix = match key.kind {
            Kind::Service => cluster::service_cluster_prefix(key),
            Kind::InferencePool => cluster::http_pool_cluster_name(key),
            Kind::Backend => cluster::http_backend_cluster_name(key),
            _ => return,
        };
        let compiled = cluster::http_target(graph, key);
        let wanted: BTreeSet<&str> = compiled.iter().map(|(name, _)| name.as_str()).collect();
        let emitted = &self.emitted[TypeUrl::Cluster.index()];
        let stale: Vec<String> = emitted
            .range(prefix.clone()..)
            .take_while(|name| name.starts_with(&prefix))
            .filter(|name| key.kind == Kind::Service || **name == prefix)
            .filter(|name| !wanted.contains(name.as_str()))
            .cloned()
            .collect();
        for name in stale {
            self.remove_cluster(out, name);
        }
        for (name, compiled) in compiled {
            self.put_cluster(out, name, compiled);
        }
    }

    fn refresh_listeners(&mut self, out: &mut Vec<Update>) {
        let names: BTreeSet<String> = self.ports.keys().map(|p| listener::name(*p)).collect();
        let gone: Vec<String> = self.emitted[TypeUrl::Listener.index()]
            .iter()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            self.remove(out, TypeUrl::Listener, name);
        }
        let listeners: Vec<Resource> = self
            .ports
            .iter()
            .map(|(p, served)| listener::compile(&self.opts, *p, served))
            .collect();
        for resource in listeners {
            self.put(out, TypeUrl::Listener, resource);
        }
    }

    /// Re-assembles every scope of `ports`, removing those of ports no longer listened on and
    /// of models no longer named.
    fn assemble_routes(&mut self, ports: &BTreeSet<u16>, out: &mut Vec<Update>) {
        let scopes = TypeUrl::ScopedRouteConfiguration;
        for port in ports {
            let prefix = route::model_scope_prefix(*port);
            let listened = self.ports.contains_key(port);
            let stale: Vec<String> = self.emitted[scopes.index()]
                .range(prefix.clone()..)
                .take_while(|name| name.starts_with(&prefix))
                .filter(|name| !listened || !self.models.contains_key(&name[prefix.len()..]))
                .cloned()
                .collect();
            for name in stale {
                self.remove(out, scopes, name);
            }
            let name = route::config_name(*port);
            if !listened {
                self.remove(out, scopes, name.clone());
                self.remove(out, TypeUrl::RouteConfiguration, name);
                continue;
            }
            let default = route::assemble(*port, route::Scope::Default, self.fragments.iter());
            self.put(out, TypeUrl::RouteConfiguration, default.resource(name));
            let scope = route::Scope::Default;
            self.put(out, scopes, route::scope_resource(*port, scope, route::ScopeRoutes::Default));
            let models: Vec<String> = self.models.keys().cloned().collect();
            for model in models {
                self.assemble_scope(*port, &model, out);
            }
        }
    }

    /// The scope of `model` on `port`: the routes of the fragments naming the model and of those
    /// with general routes, in key order, and the HTTPRoutes' unless a route on every host of the
    /// port takes every request for the model first; inline. Without routes naming the model on
    /// the port, the port's default RouteConfiguration, by name. Without a route naming the model
    /// at all there is no scope.
    fn assemble_scope(&mut self, port: u16, model: &str, out: &mut Vec<Update>) {
        let scope = route::Scope::Model(model);
        if !self.models.contains_key(model) {
            self.remove(out, TypeUrl::ScopedRouteConfiguration, route::scope_name(port, scope));
            return;
        }
        let naming = self.by_model.get(model);
        let attached = |k: &ObjectKey| {
            let fragment = self.fragments.get(k)?;
            Some((fragment, fragment.attachments.get(&port)?))
        };
        let own: Vec<_> = naming.into_iter().flatten().filter_map(attached).collect();
        let resource = if !own.is_empty() {
            // HTTPRoutes' routes follow every AIGatewayRoute's on each host, and a host's
            // virtual host holds the routes on any host too: after such a route taking every
            // request for the model, none is reachable, whatever hosts they add.
            let covered =
                own.iter().any(|(f, hosts)| f.terminal.contains(model) && hosts.contains("*"));
            let ranked = if covered { None } else { Some(&self.ranked) };
            let keys: BTreeSet<&ObjectKey> = naming
                .into_iter()
                .flatten()
                .chain(&self.general)
                .chain(ranked.into_iter().flatten())
                .collect();
            let members = keys.into_iter().filter_map(|k| Some((k, self.fragments.get(k)?)));
            let routes = route::assemble(port, scope, members);
            route::scope_resource(port, scope, route::ScopeRoutes::Inline(&routes))
        } else {
            route::scope_resource(port, scope, route::ScopeRoutes::Default)
        };
        self.put(out, TypeUrl::ScopedRouteConfiguration, resource);
    }

    /// The Cluster and, for EDS, the ClusterLoadAssignment of one AIServiceBackend.
    fn compile_backend(&mut self, graph: &Graph, key: &ObjectKey, out: &mut Vec<Update>) {
        let name = crate::wire::backend_cluster_name(key);
        match cluster::backend(graph, key) {
            Some(compiled) => self.put_cluster(out, name, compiled),
            None => self.remove_cluster(out, name),
        }
    }

    /// The Cluster and ClusterLoadAssignment of an InferencePool that a route names directly,
    /// and the cluster of its endpoint picker.
    fn compile_pool(&mut self, graph: &Graph, key: &ObjectKey, out: &mut Vec<Update>) {
        let name = crate::wire::pool_cluster_name(key);
        match cluster::pool(graph, key) {
            Some(compiled) => self.put_cluster(out, name, compiled),
            None => self.remove_cluster(out, name),
        }
        match cluster::picker(graph, key, self.opts.picker_client_cert.as_ref()) {
            Some(picker) => self.put(out, TypeUrl::Cluster, picker),
            None => self.remove(out, TypeUrl::Cluster, picker::picker_cluster_name(key)),
        }
    }

    /// The Secrets the listeners Envoy is served name.
    fn served_certificates(&self) -> BTreeSet<ObjectKey> {
        let served = self.ports.values().flatten();
        served.filter_map(|l| l.certificates.as_ref()).flatten().cloned().collect()
    }

    /// The SDS resource of the Secret `key` while a served listener names it.
    fn compile_secret(&mut self, graph: &Graph, key: &ObjectKey, out: &mut Vec<Update>) {
        let compiled = graph
            .object(key)
            .filter(|_| self.certificates.contains(key))
            .and_then(|object| secret::tls_secret(key, object).ok());
        match compiled {
            Some(resource) => self.put(out, TypeUrl::Secret, resource),
            None => self.remove(out, TypeUrl::Secret, secret::sds_name(key)),
        }
    }

    fn put_cluster(&mut self, out: &mut Vec<Update>, name: String, compiled: cluster::Compiled) {
        self.put(out, TypeUrl::Cluster, compiled.cluster);
        match compiled.load_assignment {
            Some(cla) => self.put(out, TypeUrl::ClusterLoadAssignment, cla),
            // The backend may have moved from IPs to a DNS name.
            None => self.remove(out, TypeUrl::ClusterLoadAssignment, name),
        }
    }

    fn remove_cluster(&mut self, out: &mut Vec<Update>, name: String) {
        self.remove(out, TypeUrl::Cluster, name.clone());
        self.remove(out, TypeUrl::ClusterLoadAssignment, name);
    }

    fn put(&mut self, out: &mut Vec<Update>, type_url: TypeUrl, resource: Resource) {
        self.emitted[type_url.index()].insert(resource.name.clone());
        out.push(Update { type_url, name: resource.name.clone(), resource: Some(resource) });
    }

    fn remove(&mut self, out: &mut Vec<Update>, type_url: TypeUrl, name: String) {
        if self.emitted[type_url.index()].remove(&name) {
            out.push(Update { type_url, name, resource: None });
        }
    }
}

/// Where every dynamic resource comes from: the ADS stream Envoy already has.
fn ads_config_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

/// A resource from bytes encoded here rather than by prost, versioned as
/// [`Resource::new`] versions: by the hash of the bytes.
fn resource_from_bytes(
    name: String,
    type_url: String,
    value: Vec<u8>,
    sources: Vec<ObjectKey>,
) -> Resource {
    let version = format!("{:016x}", crate::api::hash_bytes(&value));
    Resource { name, version, body: Any { type_url, value }, sources }
}
