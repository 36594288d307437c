//! Bookkeeping for one state-of-the-world ADS stream, without I/O.
//!
//! Takes: Envoy's [`DiscoveryRequest`]s, and on every wake-up the current [`Snapshot`] with the
//! names changed since the previous call. Gives: the responses to send (at most one per type,
//! in [`TypeUrl`] order), what each request answered (ACK/NACK), and a [`TypeInfo`] summary per
//! requested type.
//!
//! A response holds every requested resource of its type; its `version_info` is a hash of the
//! (name, version) list, and a response is only sent when that hash differs from the last one
//! sent, so an ACK (or a NACK, which keeps the last sent version) sends nothing again.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use super::ack::{Answer, Nack, UnknownType};
use super::clients::{Summary, TypeInfo};
use super::{Snapshot, TYPE_COUNT, TypeUrl};

/// Envoy's name for "every resource of the type".
const WILDCARD: &str = "*";

/// One SotW stream's protocol state.
#[derive(Debug, Default)]
pub struct SotwState {
    types: [TypeState; TYPE_COUNT],
    next_nonce: u64,
}

#[derive(Debug, Default)]
struct TypeState {
    /// Envoy has sent a request for this type.
    active: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    /// The request changed what to send: build the response even if no name changed.
    dirty: bool,
    /// Send the next response even if its version equals the last one sent.
    force: bool,
    sent: Option<Sent>,
    acked: Option<Sent>,
    last_nack: Option<Nack>,
}

#[derive(Debug, Clone)]
struct Sent {
    version: String,
    nonce: String,
    resources: BTreeMap<String, String>,
}

impl SotwState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a request's resource names and reports what it answered. A request answering
    /// anything but the last response of its type is stale and ignored whole: Envoy sends its
    /// full, current request again when it answers the last one.
    pub fn on_request(&mut self, req: &DiscoveryRequest) -> Result<(TypeUrl, Answer), UnknownType> {
        let type_url =
            TypeUrl::parse(&req.type_url).ok_or_else(|| UnknownType(req.type_url.clone()))?;
        let st = &mut self.types[type_url.index()];
        let answer = if req.response_nonce.is_empty() {
            // A fresh request wants the current state even if it was sent on this stream before.
            st.force = true;
            Answer::Request
        } else {
            let nonce = req.response_nonce.clone();
            let Some(sent) = st.sent.as_ref().filter(|s| s.nonce == nonce) else {
                return Ok((type_url, Answer::Stale { nonce }));
            };
            match &req.error_detail {
                None => {
                    st.acked = Some(sent.clone());
                    Answer::Ack { nonce }
                }
                Some(status) => {
                    // `sent` stays: the same version is not offered again.
                    let error = status.message.clone();
                    st.last_nack = Some(Nack::new(nonce.clone(), error.clone(), &sent.resources));
                    Answer::Nack { nonce, error }
                }
            }
        };
        let wildcard = req.resource_names.iter().any(|n| n == WILDCARD)
            || (req.resource_names.is_empty() && type_url.wildcard_by_default());
        let names: BTreeSet<String> =
            req.resource_names.iter().filter(|n| *n != WILDCARD).cloned().collect();
        if !st.active || wildcard != st.wildcard || names != st.names || st.force {
            st.dirty = true;
        }
        st.active = true;
        st.wildcard = wildcard;
        st.names = names;
        Ok((type_url, answer))
    }

    /// The responses that bring Envoy up to `snapshot`. `changed` lists the names changed since
    /// the previous call; `None` means unknown, and every requested type is rebuilt.
    pub fn responses(
        &mut self,
        snapshot: &Snapshot,
        changed: Option<&[(TypeUrl, String)]>,
    ) -> Vec<DiscoveryResponse> {
        let mut out = Vec::new();
        let mut clusters_sent = BTreeSet::new();
        for type_url in TypeUrl::ALL {
            let st = &mut self.types[type_url.index()];
            if !st.active {
                continue;
            }
            if type_url == TypeUrl::ClusterLoadAssignment
                && st.sent.is_some()
                && st.names.iter().any(|n| clusters_sent.contains(n))
            {
                // An updated cluster is re-initialised by Envoy and waits for its endpoints
                // again, so they are re-sent even when unchanged.
                st.dirty = true;
                st.force = true;
            }
            let touched = match changed {
                None => true,
                Some(changed) => changed
                    .iter()
                    .any(|(t, n)| *t == type_url && (st.wildcard || st.names.contains(n))),
            };
            if !(touched || st.dirty) {
                continue;
            }
            st.dirty = false;
            let resources: Vec<_> = if st.wildcard {
                snapshot.resources(type_url).values().collect()
            } else {
                st.names.iter().filter_map(|n| snapshot.get(type_url, n)).collect()
            };
            let force = std::mem::take(&mut st.force);
            // Leaving a name out removes it only for wildcard types; for named types an empty
            // response says nothing.
            if resources.is_empty() && !st.wildcard {
                continue;
            }
            let listed: BTreeMap<String, String> =
                resources.iter().map(|r| (r.name.clone(), r.version.clone())).collect();
            let version = version_info(&listed);
            if !force && st.sent.as_ref().is_some_and(|s| s.version == version) {
                continue;
            }
            let nonce = self.next_nonce.to_string();
            self.next_nonce += 1;
            if type_url == TypeUrl::Cluster {
                clusters_sent.extend(listed.keys().cloned());
            }
            out.push(DiscoveryResponse {
                version_info: version.clone(),
                resources: resources.iter().map(|r| r.body.clone()).collect(),
                type_url: type_url.as_str().to_string(),
                nonce: nonce.clone(),
                ..Default::default()
            });
            st.sent = Some(Sent { version, nonce, resources: listed });
        }
        out
    }

    /// Names in the last response sent for `type_url`.
    pub fn sent_names(&self, type_url: TypeUrl) -> Vec<String> {
        let sent = self.types[type_url.index()].sent.as_ref();
        sent.map(|s| s.resources.keys().cloned().collect()).unwrap_or_default()
    }

    /// A summary of every requested type, in [`TypeUrl`] order.
    pub fn info(&self) -> Vec<TypeInfo> {
        TypeUrl::ALL
            .into_iter()
            .filter(|t| self.types[t.index()].active)
            .map(|type_url| {
                let st = &self.types[type_url.index()];
                TypeInfo {
                    type_url,
                    wildcard: st.wildcard,
                    subscribed: st.names.iter().cloned().collect(),
                    sent_version: st.sent.as_ref().map(|s| s.version.clone()),
                    sent_nonce: st.sent.as_ref().map(|s| s.nonce.clone()),
                    acked_version: st.acked.as_ref().map(|s| s.version.clone()),
                    acked_nonce: st.acked.as_ref().map(|s| s.nonce.clone()),
                    acked: st.acked.as_ref().map(|s| s.resources.clone()).unwrap_or_default(),
                    last_nack: st.last_nack.clone(),
                }
            })
            .collect()
    }
}

/// A hash of the listed (name, version) pairs: equal lists give equal versions.
fn version_info(listed: &BTreeMap<String, String>) -> String {
    let mut bytes = Vec::new();
    for (name, version) in listed {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(version.as_bytes());
        bytes.push(0);
    }
    format!("{:016x}", crate::api::hash_bytes(&bytes))
}

impl Summary for SotwState {
    fn info(&self) -> Vec<TypeInfo> {
        SotwState::info(self)
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::rpc::Status;

    use super::*;
    use crate::xds::test_support::{cla, cluster, delete};
    use crate::xds::{SnapshotStore, Update};

    use TypeUrl::{Cluster as CDS, ClusterLoadAssignment as EDS};

    fn req(type_url: TypeUrl, names: &[&str]) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: type_url.as_str().into(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        }
    }

    /// Answers `resp` the way Envoy does: same names, its nonce, and the version on ACK.
    fn answer(resp: &DiscoveryResponse, names: &[&str], error: Option<&str>) -> DiscoveryRequest {
        let type_url = TypeUrl::parse(&resp.type_url).expect("known type");
        DiscoveryRequest {
            version_info: resp.version_info.clone(),
            response_nonce: resp.nonce.clone(),
            error_detail: error.map(|m| Status { code: 3, message: m.into(), details: vec![] }),
            ..req(type_url, names)
        }
    }

    fn answer_to(resp: &DiscoveryResponse, names: &[&str]) -> DiscoveryRequest {
        answer(resp, names, None)
    }

    fn store(updates: Vec<Update>) -> SnapshotStore {
        let store = SnapshotStore::new();
        store.publish(updates);
        store
    }

    fn publish(
        state: &mut SotwState,
        store: &SnapshotStore,
        updates: Vec<Update>,
    ) -> Vec<DiscoveryResponse> {
        let since = store.load().revision;
        store.publish(updates);
        let changed = store.changed_since(since);
        state.responses(&store.load(), changed.as_deref())
    }

    fn request(
        state: &mut SotwState,
        store: &SnapshotStore,
        req: DiscoveryRequest,
    ) -> (Answer, Vec<DiscoveryResponse>) {
        let (_, answer) = state.on_request(&req).expect("known type");
        (answer, state.responses(&store.load(), Some(&[])))
    }

    fn count(resp: &DiscoveryResponse) -> usize {
        resp.resources.len()
    }

    #[test]
    fn wildcard_gets_the_whole_type_and_an_ack_gets_nothing() {
        let store = store(vec![cluster("a", ""), cluster("b", ""), cla("a", 0)]);
        let mut state = SotwState::new();
        let (answer, out) = request(&mut state, &store, req(CDS, &[]));
        assert_eq!(answer, Answer::Request);
        assert_eq!(out.len(), 1);
        assert_eq!(count(&out[0]), 2);
        let (answer, again) = request(&mut state, &store, answer_to(&out[0], &[]));
        assert_eq!(answer, Answer::Ack { nonce: out[0].nonce.clone() });
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(state.info()[0].acked.len(), 2);
        assert_eq!(state.info()[0].acked_version.as_ref(), Some(&out[0].version_info));
    }

    #[test]
    fn an_empty_wildcard_type_is_answered_once() {
        let store = store(vec![]);
        let mut state = SotwState::new();
        let (_, out) = request(&mut state, &store, req(CDS, &[]));
        assert_eq!(out.len(), 1);
        assert_eq!(count(&out[0]), 0);
        let (_, again) = request(&mut state, &store, answer_to(&out[0], &[]));
        assert!(again.is_empty());
    }

    #[test]
    fn named_types_get_the_requested_set_and_changes_resend_it_whole() {
        let store = store(vec![cla("a", 0), cla("b", 0), cla("c", 0)]);
        let mut state = SotwState::new();
        let (_, out) = request(&mut state, &store, req(EDS, &["a", "b"]));
        assert_eq!(count(&out[0]), 2);
        request(&mut state, &store, answer_to(&out[0], &["a", "b"]));

        // A name outside the request changes: nothing.
        assert!(publish(&mut state, &store, vec![cla("c", 1)]).is_empty());
        let out = publish(&mut state, &store, vec![cla("b", 1)]);
        assert_eq!(count(&out[0]), 2);
        // Asking for a new set is answered with the new set.
        let (_, out) = request(&mut state, &store, answer_to(&out[0], &["a", "b", "c"]));
        assert_eq!(count(&out[0]), 3);
        // Named types are never answered with nothing.
        let (_, out) = request(&mut state, &store, answer_to(&out[0], &["missing"]));
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn removal_from_a_wildcard_type_resends_the_rest() {
        let store = store(vec![cluster("a", ""), cluster("b", "")]);
        let mut state = SotwState::new();
        let (_, out) = request(&mut state, &store, req(CDS, &[]));
        request(&mut state, &store, answer_to(&out[0], &[]));
        let out = publish(&mut state, &store, vec![delete(CDS, "b")]);
        assert_eq!(count(&out[0]), 1);
    }

    #[test]
    fn nack_keeps_the_acked_state_and_does_not_resend() {
        let store = store(vec![cluster("a", "")]);
        let mut state = SotwState::new();
        let (_, out) = request(&mut state, &store, req(CDS, &[]));
        request(&mut state, &store, answer_to(&out[0], &[]));
        let good = out[0].version_info.clone();

        let bad = publish(&mut state, &store, vec![cluster("a", "bad")]);
        let (answer, again) = request(&mut state, &store, answer(&bad[0], &[], Some("no")));
        assert_eq!(answer, Answer::Nack { nonce: bad[0].nonce.clone(), error: "no".into() });
        assert!(again.is_empty(), "{again:?}");
        assert!(state.responses(&store.load(), None).is_empty());
        let info = &state.info()[0];
        assert_eq!(info.acked_version.as_ref(), Some(&good));
        assert_eq!(info.sent_version.as_ref(), Some(&bad[0].version_info));
        assert_eq!(info.last_nack.as_ref().map(|n| n.error.as_str()), Some("no"));
    }

    #[test]
    fn stale_requests_are_ignored_whole() {
        let store = store(vec![cla("a", 0), cla("b", 0)]);
        let mut state = SotwState::new();
        let (_, first) = request(&mut state, &store, req(EDS, &["a"]));
        let second = publish(&mut state, &store, vec![cla("a", 1)]);
        assert_eq!(second.len(), 1);
        let (answer, out) = request(&mut state, &store, answer_to(&first[0], &["a", "b"]));
        assert_eq!(answer, Answer::Stale { nonce: first[0].nonce.clone() });
        assert!(out.is_empty());
        assert_eq!(state.info()[0].subscribed, ["a"]);
        assert_eq!(state.info()[0].acked_nonce, None);
    }

    #[test]
    fn a_fresh_request_is_answered_even_with_an_unchanged_version() {
        let store = store(vec![cla("a", 0)]);
        let mut state = SotwState::new();
        let (_, first) = request(&mut state, &store, req(EDS, &["a"]));
        let (_, again) = request(&mut state, &store, req(EDS, &["a"]));
        assert_eq!(again[0].version_info, first[0].version_info);
        assert_ne!(again[0].nonce, first[0].nonce);
    }

    #[test]
    fn sending_a_cluster_resends_its_endpoints() {
        let store = store(vec![cluster("a", ""), cla("a", 0)]);
        let mut state = SotwState::new();
        let (_, cds) = request(&mut state, &store, req(CDS, &[]));
        request(&mut state, &store, answer_to(&cds[0], &[]));
        let (_, eds) = request(&mut state, &store, req(EDS, &["a"]));
        request(&mut state, &store, answer_to(&eds[0], &["a"]));
        let out = publish(&mut state, &store, vec![cluster("a", "2")]);
        let types: Vec<&str> = out.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(types, [CDS.as_str(), EDS.as_str()]);
        assert_eq!(out[1].version_info, eds[0].version_info);
    }
}
