//! Status: the graph's conditions (and Envoy's rejections, see [`crate::status`]) written to
//! the `status` subresource of the kinds [`WATCHED`] marks, by the leader only.
//!
//! Takes: the graph, the snapshot and the connected Envoys (for rejections), a wake-up after
//! each batch. Gives: one server-side apply (field manager `aixds`) per object whose status
//! differs from what this replica last wrote. The AI gateway kinds get `status.conditions`
//! (`Accepted`, `ResolvedRefs`, with reason, message, `observedGeneration` and
//! `lastTransitionTime`); an InferencePool gets the Inference Extension's shape,
//! `status.parents[]` with one entry per Gateway that routes to it (through an AIGatewayRoute,
//! directly or through an AIServiceBackend) and the pool's conditions in each.
//!
//! Rejections change without a batch (an Envoy NACKs later), so the writer also looks every
//! [`RECHECK`]. A replica that becomes leader writes every status once: it does not know what
//! the previous leader wrote.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::lease::{self, LeaseOptions};
use super::rbac::WATCHED;
use super::watch::Served;
use crate::admin::RunMetrics;
use crate::api::{GATEWAY_API_GROUP, Kind, ObjectKey, ServiceIngress, Spec};
use crate::graph::{Condition, ConditionType, Graph, RefKind, listeners};
use crate::xds::{Clients, SnapshotStore};

/// How often rejections are looked at between batches.
pub const RECHECK: Duration = Duration::from_secs(2);

/// The field manager of aixds's server-side applies.
pub const FIELD_MANAGER: &str = "aixds";

pub struct StatusWriter {
    pub client: kube::Client,
    pub served: Served,
    pub lease: LeaseOptions,
    pub graph: Arc<RwLock<Graph>>,
    pub store: Arc<SnapshotStore>,
    pub clients: Arc<Clients>,
    /// Bumped after each batch.
    pub batches: watch::Receiver<u64>,
    pub stopped: watch::Receiver<bool>,
    pub metrics: Arc<RunMetrics>,
    /// The Service whose addresses the Gateways report (the Envoy Service the chart makes).
    pub gateway_service: Option<ObjectKey>,
}

/// Starts the election and the writer.
pub fn spawn(writer: StatusWriter) {
    let leading = lease::spawn(writer.client.clone(), writer.lease.clone(), writer.stopped.clone());
    tokio::spawn(writer.run(leading));
}

impl StatusWriter {
    async fn run(mut self, mut leading: watch::Receiver<bool>) {
        let mut written: HashMap<ObjectKey, Value> = HashMap::new();
        let mut times = TransitionTimes::default();
        loop {
            let leads = *leading.borrow_and_update();
            self.metrics.set_leader(leads);
            if leads {
                let desired = self.desired(&mut times);
                for (key, status) in &desired {
                    // Leadership can end while earlier writes were slow: the rest is the next
                    // leader's to write.
                    if !*leading.borrow() {
                        break;
                    }
                    if written.get(key) == Some(status) {
                        continue;
                    }
                    match self.write(key, status).await {
                        Ok(()) => {
                            written.insert(key.clone(), status.clone());
                        }
                        // Deleted meanwhile: the next batch drops it.
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        Err(e) => tracing::warn!(object = %key, "cannot write status: {e}"),
                    }
                }
                written.retain(|k, _| desired.contains_key(k));
            } else {
                written.clear();
            }
            tokio::select! {
                changed = self.batches.changed() => if changed.is_err() { return },
                changed = leading.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(RECHECK) => {}
                _ = self.stopped.wait_for(|s| *s) => return,
            }
        }
    }

    /// Every status aixds should show, by object.
    fn desired(&self, times: &mut TransitionTimes) -> BTreeMap<ObjectKey, Value> {
        let rejected = crate::status::conditions(&crate::status::rejections(
            &self.clients.list(),
            &self.store.load(),
        ));
        let graph = self.graph.read().unwrap_or_else(|e| e.into_inner());
        let kinds: HashSet<Kind> = WATCHED.iter().filter(|w| w.status).map(|w| w.kind).collect();
        let snapshot = self.store.load();
        let envoys = self.clients.list();
        let produced = crate::status::produced(
            &snapshot,
            &envoys,
            &crate::status::rejections(&envoys, &snapshot),
        );
        let attached = attached_routes(&graph);
        let foreign = graph.foreign_objects();
        let conflicts = listeners::port_conflicts(&graph);
        let addresses = self.addresses(&graph);
        let mut out = BTreeMap::new();
        for node in graph.nodes() {
            let Some(object) = &node.object else { continue };
            if !kinds.contains(&object.key.kind) {
                continue;
            }
            // Another controller's objects are its to report on.
            if foreign.contains(&object.key) {
                continue;
            }
            let mut conditions = node.conditions().to_vec();
            for c in rejected.get(&object.key).into_iter().flatten() {
                match conditions.iter_mut().find(|m| m.type_ == c.type_) {
                    Some(m) => *m = c.clone(),
                    None => conditions.push(c.clone()),
                }
            }
            if object.key.kind == Kind::Gateway {
                let gateway = GatewayStatus {
                    graph: &graph,
                    produced: &produced,
                    attached: &attached,
                    conflicts: &conflicts,
                    addresses: &addresses,
                };
                let status = gateway.json(&object.key, &conditions, object.generation, times);
                out.insert(object.key.clone(), status);
                continue;
            }
            let conditions: Vec<Value> = conditions
                .iter()
                .map(|c| condition_json(c, object.generation, times.at(&object.key, c)))
                .collect();
            let status = if object.key.kind == Kind::HTTPRoute {
                route_parents_json(&graph, node, &conditions)
            } else if object.key.kind == Kind::InferencePool {
                let parents: Vec<Value> = pool_gateways(&graph, &object.key)
                    .into_iter()
                    .map(|gw| {
                        json!({
                            "parentRef": {
                                "group": GATEWAY_API_GROUP, "kind": "Gateway",
                                "namespace": gw.namespace, "name": gw.name,
                            },
                            "conditions": conditions,
                        })
                    })
                    .collect();
                json!({ "parents": parents })
            } else if let Spec::BackendTrafficPolicy(policy) = &object.spec {
                // Envoy Gateway's shape: Gateway API's PolicyStatus, one ancestor per target.
                let controller = graph.controller().unwrap_or(crate::api::DEFAULT_CONTROLLER_NAME);
                let ancestors: Vec<Value> = policy
                    .targets()
                    .map(|t| {
                        json!({
                            "ancestorRef": {
                                "group": t.group, "kind": t.kind,
                                "namespace": object.key.namespace, "name": t.name,
                            },
                            "controllerName": controller,
                            "conditions": conditions,
                        })
                    })
                    .collect();
                json!({ "ancestors": ancestors })
            } else {
                json!({ "conditions": conditions })
            };
            out.insert(object.key.clone(), status);
        }
        times.retain(&out);
        out
    }

    /// `status.addresses` of every Gateway: the Envoy Service's load balancer addresses, or
    /// its cluster IP while it has none.
    fn addresses(&self, graph: &Graph) -> Vec<Value> {
        let service = self.gateway_service.as_ref().and_then(|key| graph.object(key));
        let Some(Spec::Service(service)) = service.map(|o| &o.spec) else { return Vec::new() };
        if !service.ingress.is_empty() {
            return service
                .ingress
                .iter()
                .map(|i| match i {
                    ServiceIngress::Ip(ip) => json!({"type": "IPAddress", "value": ip}),
                    ServiceIngress::Hostname(h) => json!({"type": "Hostname", "value": h}),
                })
                .collect();
        }
        let ip = service.cluster_ip.iter().filter(|ip| ip.parse::<std::net::IpAddr>().is_ok());
        ip.map(|ip| json!({"type": "IPAddress", "value": ip})).collect()
    }

    async fn write(&self, key: &ObjectKey, status: &Value) -> Result<(), kube::Error> {
        let Some(resource) = self.served.get(key.kind) else {
            return Ok(());
        };
        let (api, metadata): (Api<DynamicObject>, Value) = match key.kind.namespaced() {
            true => (
                Api::namespaced_with(self.client.clone(), &key.namespace, &resource),
                json!({"name": key.name, "namespace": key.namespace}),
            ),
            false => (Api::all_with(self.client.clone(), &resource), json!({"name": key.name})),
        };
        let patch = json!({
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            "metadata": metadata,
            "status": status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch_status(&key.name, &params, &Patch::Apply(&patch)).await?;
        tracing::debug!(object = %key, "status written");
        Ok(())
    }
}

/// Per (Gateway, listener name), how many routes attach there.
fn attached_routes(graph: &Graph) -> HashMap<(ObjectKey, String), usize> {
    let mut out: HashMap<(ObjectKey, String), usize> = HashMap::new();
    let mut everywhere = 0;
    for route in graph.objects().filter(|o| o.key.kind.is_route()) {
        let Some((parent_refs, _)) = route.spec.route() else { continue };
        // An AIGatewayRoute without parents serves every listener; an HTTPRoute none.
        if parent_refs.is_empty() && route.key.kind == Kind::AIGatewayRoute {
            everywhere += usize::from(graph.node(&route.key).is_some_and(|n| n.accepted()));
            continue;
        }
        let parents = graph.node(&route.key).map(|n| n.parents()).unwrap_or_default();
        for a in parents.iter().flat_map(|p| &p.attached) {
            *out.entry((a.gateway.clone(), a.listener.clone())).or_default() += 1;
        }
    }
    // A route that names no parent attaches to every listener.
    if everywhere > 0 {
        for gateway in graph.objects().filter(|o| o.key.kind == Kind::Gateway) {
            for l in listeners::listeners(graph, &gateway.key).iter().filter(|l| l.usable()) {
                *out.entry((gateway.key.clone(), l.spec.name.clone())).or_default() += everywhere;
            }
        }
    }
    out
}

/// What a Gateway's status is made of.
struct GatewayStatus<'a> {
    graph: &'a Graph,
    produced: &'a BTreeMap<ObjectKey, Vec<crate::status::Produced>>,
    attached: &'a HashMap<(ObjectKey, String), usize>,
    conflicts: &'a HashMap<(ObjectKey, String), (crate::graph::Reason, String)>,
    addresses: &'a [Value],
}

impl GatewayStatus<'_> {
    /// Gateway API's shape: the Gateway's `Accepted` and `Programmed`, and per listener its
    /// conditions, `supportedKinds` and `attachedRoutes`. `Programmed` is `True` once an Envoy
    /// has ACKed the Listener of the listener's port (for the Gateway: of every port it has).
    fn json(
        &self,
        key: &ObjectKey,
        conditions: &[Condition],
        generation: i64,
        times: &mut TransitionTimes,
    ) -> Value {
        let report = crate::status::gateway_report(self.graph, key, self.produced, self.conflicts);
        let mut listeners_json = Vec::new();
        for (l, conds) in &report.listeners {
            let conds: Vec<Value> = conds
                .iter()
                .map(|c| condition_json(c, generation, times.at_part(key, &l.spec.name, c)))
                .collect();
            let kinds: Vec<Value> =
                l.kinds.iter().map(|(group, kind)| json!({"group": group, "kind": kind})).collect();
            let attached = self.attached.get(&(key.clone(), l.spec.name.clone())).copied();
            listeners_json.push(json!({
                "name": l.spec.name,
                "supportedKinds": kinds,
                "attachedRoutes": attached.unwrap_or(0),
                "conditions": conds,
            }));
        }
        let mut top: Vec<Condition> =
            conditions.iter().filter(|c| c.type_ == ConditionType::Accepted).cloned().collect();
        top.push(report.programmed);
        let top: Vec<Value> =
            top.iter().map(|c| condition_json(c, generation, times.at(key, c))).collect();
        json!({ "conditions": top, "listeners": listeners_json, "addresses": self.addresses })
    }
}

fn condition_json(c: &Condition, generation: i64, since: &str) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or_default();
    v["observedGeneration"] = json!(generation);
    v["lastTransitionTime"] = json!(since);
    v
}

/// When each condition took its current status, as Kubernetes shows it (RFC 3339, seconds).
#[derive(Default)]
struct TransitionTimes {
    /// (object, part of it (a Gateway's listener) or "", condition type) → (status, since).
    at: HashMap<(ObjectKey, String, ConditionType), (bool, String)>,
}

impl TransitionTimes {
    fn at(&mut self, key: &ObjectKey, c: &Condition) -> &str {
        self.at_part(key, "", c)
    }

    fn at_part(&mut self, key: &ObjectKey, part: &str, c: &Condition) -> &str {
        let entry = self
            .at
            .entry((key.clone(), part.to_string(), c.type_))
            .or_insert_with(|| (c.status, now()));
        if entry.0 != c.status {
            *entry = (c.status, now());
        }
        &entry.1
    }

    fn retain(&mut self, live: &BTreeMap<ObjectKey, Value>) {
        self.at.retain(|(k, _, _), _| live.contains_key(k));
    }
}

fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Gateway API's route status: per Gateway the route names (another controller's aside), its
/// `parentRef` as written, aixds's `controllerName`, and whether that Gateway took the route
/// (`Accepted`) and whether the route's references resolve (`ResolvedRefs`).
fn route_parents_json(graph: &Graph, node: &crate::graph::Node, conditions: &[Value]) -> Value {
    let Some(Some((parent_refs, _))) = node.object.as_deref().map(|o| o.spec.route()) else {
        return json!({ "parents": [] });
    };
    let find = |type_: &str| conditions.iter().find(|c| c["type"] == type_).cloned();
    let (Some(accepted), Some(resolved)) = (find("Accepted"), find("ResolvedRefs")) else {
        return json!({ "parents": [] });
    };
    let controller = graph.controller().unwrap_or(crate::api::DEFAULT_CONTROLLER_NAME);
    let parents: Vec<Value> = node
        .parents()
        .iter()
        .filter(|p| !p.foreign)
        .map(|p| {
            let written = &parent_refs[p.index];
            let mut parent_ref = json!({
                "group": GATEWAY_API_GROUP, "kind": "Gateway",
                "namespace": p.gateway.namespace, "name": p.gateway.name,
            });
            if let Some(section) = &written.section_name {
                parent_ref["sectionName"] = json!(section);
            }
            if let Some(port) = written.port {
                parent_ref["port"] = json!(port);
            }
            let mut here = accepted.clone();
            if accepted["status"] == "True" {
                if let Some((reason, message)) = &p.refused {
                    here["status"] = json!("False");
                    here["reason"] = serde_json::to_value(reason).unwrap_or_default();
                    here["message"] = json!(message);
                } else {
                    here["message"] = json!("");
                }
            }
            json!({
                "parentRef": parent_ref,
                "controllerName": controller,
                "conditions": [here, resolved.clone()],
            })
        })
        .collect();
    json!({ "parents": parents })
}

/// The Gateways whose routes send traffic to `pool`, directly or through an AIServiceBackend.
fn pool_gateways(graph: &Graph, pool: &ObjectKey) -> Vec<ObjectKey> {
    let mut routes = Vec::new();
    for (kind, referrer) in graph.referrers(pool) {
        if kind != RefKind::BackendRef {
            continue;
        }
        match referrer.key.kind {
            Kind::AIGatewayRoute | Kind::HTTPRoute => routes.push(referrer.key.clone()),
            Kind::AIServiceBackend => routes.extend(
                graph
                    .referrers(&referrer.key)
                    .into_iter()
                    .filter(|(k, n)| {
                        *k == RefKind::BackendRef && n.key.kind == Kind::AIGatewayRoute
                    })
                    .map(|(_, n)| n.key.clone()),
            ),
            _ => {}
        }
    }
    let mut gateways: Vec<ObjectKey> = routes
        .iter()
        .flat_map(|r| graph.references(r))
        .filter(|(k, n)| *k == RefKind::ParentRef && n.object.is_some())
        .map(|(_, n)| n.key.clone())
        .collect();
    gateways.sort();
    gateways.dedup();
    gateways
}
