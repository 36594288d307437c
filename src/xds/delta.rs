//! Bookkeeping for one delta (incremental) ADS stream, without I/O.
//!
//! Takes: Envoy's [`DeltaDiscoveryRequest`]s, and on every wake-up the current [`Snapshot`] with
//! the names changed since the previous call. Gives: the responses to send (at most one per
//! type, empty only as the first answer to a wildcard subscription, clusters before endpoints
//! and listeners before routes), what each request
//! answered (ACK/NACK), and a [`TypeInfo`] summary per requested type.
//!
//! Per type it tracks the wildcard flag, explicit subscriptions, the version Envoy holds of each
//! name, and the responses not yet answered. A NACK keeps the rejected version as "held" so that
//! the same version is not pushed again in a loop; the next change, or an explicit
//! re-subscription, sends the resource again.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as PbResource,
};

use super::ack::{Answer, Nack, UnknownType};
use super::clients::{Summary, TypeInfo};
use super::{Snapshot, TYPE_COUNT, TypeUrl};

/// Envoy's name for "every resource of the type".
const WILDCARD: &str = "*";

/// Unanswered responses kept per type; Envoy answers each in order, so more means it is not
/// answering and the oldest are dropped (their late answers then count as stale).
const MAX_PENDING: usize = 64;

/// One delta stream's protocol state.
#[derive(Debug, Default)]
pub struct DeltaState {
    types: [TypeState; TYPE_COUNT],
    next_nonce: u64,
}

#[derive(Debug, Default)]
struct TypeState {
    /// Envoy has sent a request for this type.
    active: bool,
    wildcard: bool,
    subscribed: BTreeSet<String>,
    /// Name -> version Envoy holds (sent by us, or declared in `initial_resource_versions`).
    held: BTreeMap<String, String>,
    /// Explicitly subscribed names Envoy was told do not exist.
    told_absent: BTreeSet<String>,
    /// Names to re-evaluate on the next push regardless of the snapshot's change log.
    dirty: BTreeSet<String>,
    /// Re-evaluate every name on the next push.
    dirty_all: bool,
    /// A wildcard subscription not answered yet: it is answered even when there is nothing, so
    /// that Envoy stops waiting for the type (with no Clusters, Envoy would wait its initial
    /// fetch timeout, 15 s, before asking for Listeners).
    wildcard_unanswered: bool,
    /// Nonce -> what that response carried.
    pending: BTreeMap<u64, Pending>,
    sent: Option<(u64, String)>,
    acked: BTreeMap<String, String>,
    acked_response: Option<(u64, String)>,
    last_nack: Option<Nack>,
}

#[derive(Debug)]
struct Pending {
    revision: u64,
    resources: Vec<(String, String)>,
    removed: Vec<String>,
}

impl DeltaState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a request's subscription changes and reports what it answered. A stale answer
    /// (to a response that is no longer pending) is ignored, but its subscription changes are
    /// still applied: delta requests are incremental and dropping them would lose them.
    pub fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
    ) -> Result<(TypeUrl, Answer), UnknownType> {
        let type_url =
            TypeUrl::parse(&req.type_url).ok_or_else(|| UnknownType(req.type_url.clone()))?;
        let st = &mut self.types[type_url.index()];
        let answer = if req.response_nonce.is_empty() {
            Answer::Request
        } else {
            let error = req.error_detail.as_ref().map(|e| e.message.clone());
            st.answer(&req.response_nonce, error)
        };
        if !st.active {
            st.active = true;
            st.dirty_all = true;
            // Legacy wildcard: a first request naming nothing asks for everything.
            st.wildcard = req.resource_names_subscribe.is_empty() && type_url.wildcard_by_default();
            // An Envoy that reconnects holding resources is initialised already.
            st.wildcard_unanswered = st.wildcard && req.initial_resource_versions.is_empty();
        }
        for name in &req.resource_names_subscribe {
            if name == WILDCARD {
                st.dirty_all |= !st.wildcard;
                st.wildcard_unanswered |= !st.wildcard;
                st.wildcard = true;
            } else {
                // A (re)subscription always gets the current version: Envoy asks again when it
                // has dropped the resource.
                st.subscribed.insert(name.clone());
                st.forget(name);
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == WILDCARD {
                st.wildcard = false;
                let subscribed = &st.subscribed;
                st.held.retain(|n, _| subscribed.contains(n));
            } else {
                // Envoy drops what it unsubscribes from; if the wildcard still covers the name,
                // Envoy expects it to be sent again.
                st.subscribed.remove(name);
                st.forget(name);
                if !st.wildcard {
                    st.dirty.remove(name);
                }
            }
        }
        // After the subscriptions: on reconnect Envoy subscribes again *and* says what it holds,
        // and what it holds at the current version is not sent again.
        for (name, version) in &req.initial_resource_versions {
            st.held.insert(name.clone(), version.clone());
            st.told_absent.remove(name);
            st.dirty.insert(name.clone());
        }
        Ok((type_url, answer))
    }

    /// The responses that bring Envoy up to `snapshot`. `changed` lists the names changed since
    /// the previous call; `None` means unknown, and every name is compared.
    pub fn responses(
        &mut self,
        snapshot: &Snapshot,
        changed: Option<&[(TypeUrl, String)]>,
    ) -> Vec<DeltaDiscoveryResponse> {
        let mut out = Vec::new();
        let mut clusters_sent = Vec::new();
        for type_url in TypeUrl::ALL {
            let st = &mut self.types[type_url.index()];
            if !st.active {
                continue;
            }
            if type_url == TypeUrl::ClusterLoadAssignment {
                // An updated cluster is re-initialised by Envoy and waits for its endpoints
                // again, so they are re-sent even when unchanged.
                for name in clusters_sent.drain(..) {
                    if st.held.remove(&name).is_some() {
                        st.dirty.insert(name);
                    }
                }
            }
            let candidates = st.candidates(type_url, snapshot, changed);
            let mut resources = Vec::new();
            let mut removed = Vec::new();
            for name in candidates {
                st.evaluate(type_url, name, snapshot, &mut resources, &mut removed);
            }
            if resources.is_empty() && removed.is_empty() && !st.wildcard_unanswered {
                continue;
            }
            st.wildcard_unanswered = false;
            let nonce = self.next_nonce;
            self.next_nonce += 1;
            if type_url == TypeUrl::Cluster {
                clusters_sent.extend(resources.iter().map(|r: &PbResource| r.name.clone()));
            }
            st.pending.insert(
                nonce,
                Pending {
                    revision: snapshot.revision,
                    resources: resources
                        .iter()
                        .map(|r| (r.name.clone(), r.version.clone()))
                        .collect(),
                    removed: removed.clone(),
                },
            );
            while st.pending.len() > MAX_PENDING {
                st.pending.pop_first();
            }
            st.sent = Some((snapshot.revision, nonce.to_string()));
            out.push(DeltaDiscoveryResponse {
                system_version_info: snapshot.revision.to_string(),
                type_url: type_url.as_str().to_string(),
                resources,
                removed_resources: removed,
                nonce: nonce.to_string(),
                ..Default::default()
            });
        }
        out
    }

    /// A summary of every requested type, in [`TypeUrl`] order.
    pub fn info(&self) -> Vec<TypeInfo> {
        TypeUrl::ALL
            .into_iter()
            .filter(|t| self.types[t.index()].active)
            .map(|type_url| {
                let st = &self.types[type_url.index()];
                let version = |r: &Option<(u64, String)>| r.as_ref().map(|(v, _)| v.to_string());
                let nonce = |r: &Option<(u64, String)>| r.as_ref().map(|(_, n)| n.clone());
                TypeInfo {
                    type_url,
                    wildcard: st.wildcard,
                    subscribed: st.subscribed.iter().cloned().collect(),
                    sent_version: version(&st.sent),
                    sent_nonce: nonce(&st.sent),
                    acked_version: version(&st.acked_response),
                    acked_nonce: nonce(&st.acked_response),
                    acked: st.acked.clone(),
                    last_nack: st.last_nack.clone(),
                }
            })
            .collect()
    }
}

impl TypeState {
    fn answer(&mut self, nonce: &str, error: Option<String>) -> Answer {
        let Some(n) = nonce.parse::<u64>().ok().filter(|n| self.pending.contains_key(n)) else {
            return Answer::Stale { nonce: nonce.to_string() };
        };
        // Envoy answers in order: older unanswered responses will not be answered any more.
        let mut newer = self.pending.split_off(&n);
        let Some(answered) = newer.remove(&n) else {
            return Answer::Stale { nonce: nonce.to_string() };
        };
        self.pending = newer;
        match error {
            None => {
                for (name, version) in answered.resources {
                    self.acked.insert(name, version);
                }
                for name in &answered.removed {
                    self.acked.remove(name);
                }
                self.acked_response = Some((answered.revision, nonce.to_string()));
                Answer::Ack { nonce: nonce.to_string() }
            }
            Some(error) => {
                // `held` keeps the rejected versions: sending them again would be rejected again.
                let sent = answered.resources.iter().map(|(n, v)| (n, v));
                let nack = Nack::new(nonce.to_string(), error.clone(), sent);
                self.last_nack = Some(nack);
                Answer::Nack { nonce: nonce.to_string(), error }
            }
        }
    }

    /// Makes the next push send `name` whatever Envoy holds.
    fn forget(&mut self, name: &str) {
        self.held.remove(name);
        self.told_absent.remove(name);
        self.dirty.insert(name.to_string());
    }

    fn candidates(
        &mut self,
        type_url: TypeUrl,
        snapshot: &Snapshot,
        changed: Option<&[(TypeUrl, String)]>,
    ) -> BTreeSet<String> {
        let mut names = std::mem::take(&mut self.dirty);
        match changed {
            Some(changed) if !self.dirty_all => {
                names
                    .extend(changed.iter().filter(|(t, _)| *t == type_url).map(|(_, n)| n.clone()));
            }
            _ => {
                names.extend(snapshot.resources(type_url).keys().cloned());
                names.extend(self.held.keys().cloned());
                names.extend(self.subscribed.iter().cloned());
            }
        }
        self.dirty_all = false;
        names
    }

    fn evaluate(
        &mut self,
        type_url: TypeUrl,
        name: String,
        snapshot: &Snapshot,
        resources: &mut Vec<PbResource>,
        removed: &mut Vec<String>,
    ) {
        if !self.wildcard && !self.subscribed.contains(&name) {
            // Declared in initial_resource_versions without being asked for: Envoy drops it.
            self.held.remove(&name);
            return;
        }
        match snapshot.get(type_url, &name) {
            Some(r) => {
                if self.held.get(&name) != Some(&r.version) {
                    self.held.insert(name.clone(), r.version.clone());
                    self.told_absent.remove(&name);
                    resources.push(PbResource {
                        name,
                        version: r.version.clone(),
                        resource: Some(r.body.clone()),
                        ..Default::default()
                    });
                }
            }
            None => {
                let was_held = self.held.remove(&name).is_some();
                // An explicit subscription to nothing is answered once, so Envoy stops waiting.
                let unanswered =
                    self.subscribed.contains(&name) && self.told_absent.insert(name.clone());
                if was_held || unanswered {
                    removed.push(name);
                }
            }
        }
    }
}

impl Summary for DeltaState {
    fn info(&self) -> Vec<TypeInfo> {
        DeltaState::info(self)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, ScopedRouteConfiguration};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
    use envoy_types::pb::google::rpc::Status;

    use super::*;
    use crate::xds::test_support::{cla, cluster, delete, put};
    use crate::xds::{Resource, SnapshotStore, Update};

    use TypeUrl::{Cluster as CDS, ClusterLoadAssignment as EDS, Listener as LDS};

    fn sub(type_url: TypeUrl, names: &[&str]) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.as_str().into(),
            resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        }
    }

    fn unsub(type_url: TypeUrl, names: &[&str]) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.as_str().into(),
            resource_names_unsubscribe: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        }
    }

    fn ack(resp: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        }
    }

    fn nack(resp: &DeltaDiscoveryResponse, message: &str) -> DeltaDiscoveryRequest {
        let error_detail = Some(Status { code: 3, message: message.into(), details: vec![] });
        DeltaDiscoveryRequest { error_detail, ..ack(resp) }
    }

    fn names(resp: &DeltaDiscoveryResponse) -> Vec<&str> {
        resp.resources.iter().map(|r| r.name.as_str()).collect()
    }

    fn store(updates: Vec<Update>) -> SnapshotStore {
        let store = SnapshotStore::new();
        store.publish(updates);
        store
    }

    /// Publishes and returns the responses for what changed, as the server does.
    fn publish(
        state: &mut DeltaState,
        store: &SnapshotStore,
        updates: Vec<Update>,
    ) -> Vec<DeltaDiscoveryResponse> {
        let since = store.load().revision;
        store.publish(updates);
        let changed = store.changed_since(since);
        state.responses(&store.load(), changed.as_deref())
    }

    fn request(
        state: &mut DeltaState,
        store: &SnapshotStore,
        req: DeltaDiscoveryRequest,
    ) -> (Answer, Vec<DeltaDiscoveryResponse>) {
        let (_, answer) = state.on_request(&req).expect("known type");
        (answer, state.responses(&store.load(), Some(&[])))
    }

    #[test]
    fn empty_first_request_is_a_wildcard_for_clusters_only() {
        let store = store(vec![cluster("a", ""), cluster("b", ""), cla("a", 0)]);
        let mut state = DeltaState::new();
        let (answer, out) = request(&mut state, &store, sub(CDS, &[]));
        assert_eq!(answer, Answer::Request);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].type_url, CDS.as_str());
        assert_eq!(names(&out[0]), ["a", "b"]);
        assert_eq!(
            out[0].resources[0].resource.as_ref().map(|a| a.type_url.as_str()),
            Some(CDS.as_str())
        );

        // Endpoints are never a wildcard by default: an empty request gets nothing.
        let (_, out) = request(&mut state, &store, sub(EDS, &[]));
        assert!(out.is_empty(), "{out:?}");
        let (_, out) = request(&mut state, &store, sub(EDS, &["a"]));
        assert_eq!(names(&out[0]), ["a"]);
    }

    #[test]
    fn a_wildcard_is_answered_once_even_when_there_is_nothing() {
        let store = store(Vec::new());
        let mut state = DeltaState::new();
        state.on_request(&sub(TypeUrl::Cluster, &[])).unwrap();
        let out = state.responses(&store.load(), None);
        assert_eq!(out.len(), 1, "Envoy must not wait out its initial fetch timeout");
        assert!(out[0].resources.is_empty() && out[0].removed_resources.is_empty());
        state.on_request(&ack(&out[0])).unwrap();
        assert!(state.responses(&store.load(), None).is_empty(), "once only");
    }

    #[test]
    fn secrets_are_sent_only_by_name() {
        let secret = |name: &str| {
            let body = Secret { name: name.into(), ..Default::default() };
            put(TypeUrl::Secret, Resource::new(name.into(), &body, vec![]))
        };
        let store = store(vec![secret("s1"), secret("s2")]);
        let mut state = DeltaState::new();
        let (_, out) = request(&mut state, &store, sub(TypeUrl::Secret, &[]));
        assert!(out.is_empty(), "an empty request is no wildcard for secrets: {out:?}");
        let (_, out) = request(&mut state, &store, sub(TypeUrl::Secret, &["s2"]));
        assert_eq!(out[0].type_url, TypeUrl::Secret.as_str());
        assert_eq!(names(&out[0]), ["s2"]);
    }

    #[test]
    fn star_subscribes_and_unsubscribes_the_wildcard() {
        let store = store(vec![cluster("a", ""), cluster("b", "")]);
        let mut state = DeltaState::new();
        let (_, out) = request(&mut state, &store, sub(CDS, &["*", "a"]));
        assert_eq!(names(&out[0]), ["a", "b"]);
        assert!(state.info()[0].wildcard);

        let (_, out) = request(&mut state, &store, unsub(CDS, &["*"]));
        assert!(out.is_empty());
        // Only the explicit subscription still gets updates.
        let out = publish(&mut state, &store, vec![cluster("a", "2"), cluster("b", "2")]);
        assert_eq!(names(&out[0]), ["a"]);
    }

    #[test]
    fn a_change_sends_only_that_resource() {
        let store = store(vec![cluster("a", ""), cluster("b", ""), cla("a", 0), cla("b", 0)]);
        let mut state = DeltaState::new();
        request(&mut state, &store, sub(CDS, &[]));
        request(&mut state, &store, sub(EDS, &["a", "b"]));

        let out = publish(&mut state, &store, vec![cla("b", 1)]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].type_url, EDS.as_str());
        assert_eq!(names(&out[0]), ["b"]);
        assert!(out[0].removed_resources.is_empty());

        // Nothing changed: nothing is sent, not even an empty response.
        assert!(state.responses(&store.load(), Some(&[])).is_empty());
        assert!(state.responses(&store.load(), None).is_empty());
    }

    #[test]
    fn removals_are_sent_for_vanished_and_missing_names() {
        let store = store(vec![cluster("a", ""), cluster("b", ""), cla("a", 0)]);
        let mut state = DeltaState::new();
        request(&mut state, &store, sub(CDS, &[]));
        let out = publish(&mut state, &store, vec![delete(CDS, "b")]);
        assert!(out[0].resources.is_empty());
        assert_eq!(out[0].removed_resources, ["b"]);

        // An explicit subscription to a name that does not exist is answered once.
        let (_, out) = request(&mut state, &store, sub(EDS, &["a", "nope"]));
        assert_eq!(names(&out[0]), ["a"]);
        assert_eq!(out[0].removed_resources, ["nope"]);
        assert!(state.responses(&store.load(), None).is_empty());
        // And sent when it appears.
        let out = publish(&mut state, &store, vec![cla("nope", 0)]);
        assert_eq!(names(&out[0]), ["nope"]);
        assert!(out[0].removed_resources.is_empty());
    }

    #[test]
    fn unsubscribed_names_get_no_updates() {
        let store = store(vec![cla("a", 0), cla("b", 0)]);
        let mut state = DeltaState::new();
        request(&mut state, &store, sub(EDS, &["a", "b"]));
        let (_, out) = request(&mut state, &store, unsub(EDS, &["a"]));
        assert!(out.is_empty(), "{out:?}");
        let out = publish(&mut state, &store, vec![cla("a", 1), cla("b", 1)]);
        assert_eq!(names(&out[0]), ["b"]);
        // Removing it sends no removal either: Envoy has already dropped it.
        let out = publish(&mut state, &store, vec![delete(EDS, "a")]);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn resubscribing_resends_the_current_version() {
        let store = store(vec![cla("a", 0)]);
        let mut state = DeltaState::new();
        let (_, first) = request(&mut state, &store, sub(EDS, &["a"]));
        let (_, again) = request(&mut state, &store, sub(EDS, &["a"]));
        assert_eq!(names(&again[0]), ["a"]);
        assert_eq!(again[0].resources[0].version, first[0].resources[0].version);
        assert_ne!(again[0].nonce, first[0].nonce);
    }

    #[test]
    fn initial_resource_versions_skip_what_envoy_already_holds() {
        let store =
            store(vec![cluster("a", ""), cluster("b", ""), cla("a", 0), cla("b", 0), cla("c", 0)]);
        let held = store.load();
        let version = |t, n: &str| held.get(t, n).map(|r| r.version.clone()).unwrap_or_default();
        let mut state = DeltaState::new();
        let req = DeltaDiscoveryRequest {
            initial_resource_versions: HashMap::from([
                ("a".to_string(), version(CDS, "a")),
                ("b".to_string(), version(CDS, "b")),
            ]),
            ..sub(CDS, &[])
        };
        let (_, out) = request(&mut state, &store, req);
        assert!(out.is_empty(), "{out:?}");

        // One stale version and one vanished resource.
        let req = DeltaDiscoveryRequest {
            initial_resource_versions: HashMap::from([
                ("a".to_string(), version(EDS, "a")),
                ("b".to_string(), "old".to_string()),
                ("gone".to_string(), "old".to_string()),
            ]),
            ..sub(EDS, &["a", "b", "gone"])
        };
        let (_, out) = request(&mut state, &store, req);
        assert_eq!(names(&out[0]), ["b"]);
        assert_eq!(out[0].removed_resources, ["gone"]);
    }

    #[test]
    fn ack_records_versions_and_nack_keeps_them_without_resending() {
        let store = store(vec![cluster("a", "")]);
        let mut state = DeltaState::new();
        let (_, out) = request(&mut state, &store, sub(CDS, &[]));
        let (answer, _) = request(&mut state, &store, ack(&out[0]));
        assert_eq!(answer, Answer::Ack { nonce: out[0].nonce.clone() });
        let good = out[0].resources[0].version.clone();
        assert_eq!(state.info()[0].acked.get("a"), Some(&good));

        let out = publish(&mut state, &store, vec![cluster("a", "bad")]);
        let (answer, again) = request(&mut state, &store, nack(&out[0], "bad cluster"));
        assert_eq!(
            answer,
            Answer::Nack { nonce: out[0].nonce.clone(), error: "bad cluster".into() }
        );
        assert!(again.is_empty(), "the rejected version must not be resent: {again:?}");
        assert!(state.responses(&store.load(), None).is_empty());
        let info = &state.info()[0];
        assert_eq!(info.acked.get("a"), Some(&good));
        assert_eq!(info.last_nack.as_ref().map(|n| n.error.as_str()), Some("bad cluster"));
        assert_eq!(info.sent_nonce.as_ref(), Some(&out[0].nonce));

        // The next version is sent.
        let out = publish(&mut state, &store, vec![cluster("a", "fixed")]);
        assert_eq!(names(&out[0]), ["a"]);
    }

    #[test]
    fn stale_answers_are_ignored_but_their_subscriptions_apply() {
        let store = store(vec![cluster("a", "")]);
        let mut state = DeltaState::new();
        let (_, first) = request(&mut state, &store, sub(CDS, &[]));
        let second = publish(&mut state, &store, vec![cluster("a", "2")]);
        let (answer, _) = request(&mut state, &store, ack(&second[0]));
        assert!(matches!(answer, Answer::Ack { .. }));
        // Answering the older response after the newer one changes nothing.
        let (answer, _) = request(&mut state, &store, nack(&first[0], "late"));
        assert_eq!(answer, Answer::Stale { nonce: first[0].nonce.clone() });
        assert_eq!(state.info()[0].last_nack, None);
        assert_eq!(state.info()[0].acked_nonce.as_ref(), Some(&second[0].nonce));
        let (answer, _) = request(&mut state, &store, nack(&second[0], "twice"));
        assert!(matches!(answer, Answer::Stale { .. }));

        let store2 = store;
        store2.publish(vec![cla("x", 0)]);
        let req = DeltaDiscoveryRequest { response_nonce: "999".into(), ..sub(EDS, &["x"]) };
        let (answer, out) = request(&mut state, &store2, req);
        assert!(matches!(answer, Answer::Stale { .. }));
        assert_eq!(names(&out[0]), ["x"]);
    }

    #[test]
    fn unanswered_responses_are_bounded() {
        let store = store(vec![cluster("a", "")]);
        let mut state = DeltaState::new();
        let (_, first) = request(&mut state, &store, sub(CDS, &[]));
        for i in 0..MAX_PENDING {
            publish(&mut state, &store, vec![cluster("a", &i.to_string())]);
        }
        let (answer, _) = request(&mut state, &store, ack(&first[0]));
        assert!(matches!(answer, Answer::Stale { .. }));
    }

    #[test]
    fn sending_a_cluster_resends_its_endpoints() {
        let store = store(vec![cluster("a", ""), cluster("b", ""), cla("a", 0), cla("b", 0)]);
        let mut state = DeltaState::new();
        request(&mut state, &store, sub(CDS, &[]));
        request(&mut state, &store, sub(EDS, &["a", "b"]));
        let out = publish(&mut state, &store, vec![cluster("a", "2")]);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].type_url.as_str(), names(&out[0])), (CDS.as_str(), vec!["a"]));
        assert_eq!((out[1].type_url.as_str(), names(&out[1])), (EDS.as_str(), vec!["a"]));
    }

    #[test]
    fn responses_follow_type_order() {
        let listener = Listener { name: "l".into(), ..Default::default() };
        let routes = RouteConfiguration { name: "r".into(), ..Default::default() };
        let scope = ScopedRouteConfiguration { name: "r".into(), ..Default::default() };
        let secret = Secret { name: "s".into(), ..Default::default() };
        let store = store(vec![
            cluster("a", ""),
            cla("a", 0),
            put(LDS, Resource::new("l".into(), &listener, vec![])),
            put(TypeUrl::ScopedRouteConfiguration, Resource::new("r".into(), &scope, vec![])),
            put(TypeUrl::RouteConfiguration, Resource::new("r".into(), &routes, vec![])),
            put(TypeUrl::Secret, Resource::new("s".into(), &secret, vec![])),
        ]);
        let mut state = DeltaState::new();
        // Subscribed in reverse; the first push after all of them answers them in type order.
        for req in [
            sub(TypeUrl::Secret, &["s"]),
            sub(TypeUrl::RouteConfiguration, &["r"]),
            sub(TypeUrl::ScopedRouteConfiguration, &[]),
            sub(LDS, &[]),
            sub(EDS, &["a"]),
            sub(CDS, &[]),
        ] {
            state.on_request(&req).expect("known type");
        }
        let out = state.responses(&store.load(), Some(&[]));
        let order: Vec<&str> = out.iter().map(|r| r.type_url.as_str()).collect();
        let want: Vec<&str> = TypeUrl::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(order, want);
    }

    #[test]
    fn unrequested_types_and_unknown_types_get_nothing() {
        let store = store(vec![cluster("a", "")]);
        let mut state = DeltaState::new();
        assert!(state.responses(&store.load(), None).is_empty());
        let req = DeltaDiscoveryRequest {
            type_url: "type.googleapis.com/envoy.config.route.v3.VirtualHost".into(),
            ..Default::default()
        };
        assert!(state.on_request(&req).is_err());
        assert!(state.info().is_empty());
    }
}
