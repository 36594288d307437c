//! Leader election with a `coordination.k8s.io/v1` Lease: one replica writes status, every
//! replica serves xDS and the ext_proc.
//!
//! The leader renews the Lease every third of its duration. Another replica takes it over when
//! it has not been renewed for the whole duration. The Lease's resourceVersion makes a takeover
//! or a renewal a compare-and-swap: of two replicas racing, one gets a conflict and stays a
//! follower. A replica that cannot renew (API server unreachable) stops counting itself leader at
//! once rather than when the Lease expires, so two writers never overlap; a missed status write
//! is made by whoever leads next (a new leader writes every object's status once). A round that
//! gets no answer within a third of the duration counts as failed: a request may hang (a broken
//! network path) or be retried for minutes (kube-rs retries a 503 with backoff), and a leader
//! waiting on it past its Lease's expiry would overlap with the replica taking it over.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;

/// Which Lease, and who this replica is.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (the Pod name in a cluster).
    pub identity: String,
    pub duration: Duration,
}

impl LeaseOptions {
    /// The Lease `aixds` in `namespace`, held for 15 s, with `identity`.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        LeaseOptions {
            namespace: namespace.into(),
            name: "aixds".into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
        }
    }
}

/// Runs the election until `stopped`; the receiver says whether this replica leads now.
pub fn spawn(
    client: kube::Client,
    opts: LeaseOptions,
    mut stopped: watch::Receiver<bool>,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &opts.namespace);
        let every = opts.duration / 3;
        loop {
            let leading = match tokio::time::timeout(every, try_lead(&api, &opts)).await {
                Ok(Ok(leading)) => leading,
                Ok(Err(e)) => {
                    tracing::warn!(lease = %opts.name, "cannot renew the lease: {e}");
                    false
                }
                Err(_) => {
                    tracing::warn!(
                        lease = %opts.name,
                        "cannot renew the lease: the API server did not answer within {every:?}"
                    );
                    false
                }
            };
            tx.send_if_modified(|l| {
                if *l != leading {
                    tracing::info!(identity = %opts.identity, leading, "leadership changed");
                    *l = leading;
                    return true;
                }
                false
            });
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
        }
    });
    rx
}

/// One round: create the Lease, renew it, or take it over when expired. True when this replica
/// holds it afterwards.
async fn try_lead(api: &Api<Lease>, opts: &LeaseOptions) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let seconds = i32::try_from(opts.duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&opts.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(opts.name.clone()), ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(opts.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let mine = spec.holder_identity.as_deref() == Some(opts.identity.as_str());
    let held_for = i64::from(spec.lease_duration_seconds.unwrap_or(seconds));
    let expired = match (&spec.holder_identity, &spec.renew_time) {
        (Some(_), Some(renewed)) => renewed.0.as_second() + held_for < now.as_second(),
        _ => true,
    };
    if !mine && !expired {
        return Ok(false);
    }
    if !mine {
        spec.holder_identity = Some(opts.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.lease_duration_seconds = Some(seconds);
    spec.renew_time = Some(MicroTime(now));
    match api.replace(&opts.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
