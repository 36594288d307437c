//! Leader election of `aixds serve` replicas against the test API server: who writes status
//! when a follower watches, when the leader cannot renew, and when replicas race for the Lease.
//! What counts is what the API server saw: which replica sent each status PATCH and each Lease
//! request (every replica's client names it, see [`TestApi::config_as`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use aixds::kube::lease::LeaseOptions;
use aixds::run::Running;
use serde_json::Value;
use tokio::sync::watch;

use crate::harness::*;
use crate::kubeapi::{Fault, TestApi};
use crate::kubernetes::{
    GATEWAY, ROUTE, SECOND_ROUTE, backend_yaml, leads, lease, replica, resolved, status_patch,
};

const ROUTE_STATUS: &str =
    "/apis/aigateway.envoyproxy.io/v1beta1/namespaces/default/aigatewayroutes/r/status";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";

/// Long enough for a replica that would write to have written: a batch's status writes follow
/// it within milliseconds.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

fn resolves(body: &Value) -> bool {
    body["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "ResolvedRefs" && c["status"] == "True"))
}

fn holder(api: &TestApi) -> Option<String> {
    let lease = api.get("Lease", "default", "aixds")?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

/// Which replicas sent the PATCHes from the `from`th on.
fn writers(api: &TestApi, from: usize) -> BTreeSet<String> {
    api.patches()[from..].iter().map(|p| p.replica.clone().unwrap_or_default()).collect()
}

/// Samples every replica's `aixds_status_leader` until told to stop; gives the most replicas
/// that said they lead in one sample.
struct LeaderSampler {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<usize>,
}

impl LeaderSampler {
    fn start(replicas: &[&Running]) -> LeaderSampler {
        let admins: Vec<SocketAddr> = replicas.iter().map(|r| r.admin_addr.unwrap()).collect();
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut most = 0;
            while !*stopped.borrow_and_update() {
                let mut leading = 0;
                for admin in &admins {
                    // A replica stopped (or shutting down) leads no more.
                    let m = request(admin.port(), "GET", "/metrics", &[], "").await;
                    let m = m.map(|r| r.body).unwrap_or_default();
                    leading += usize::from(m.lines().any(|l| l == "aixds_status_leader 1"));
                }
                most = most.max(leading);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = stopped.changed() => {}
                }
            }
            most
        });
        LeaderSampler { stop, task }
    }

    async fn most_leaders(self) -> usize {
        let _ = self.stop.send(true);
        self.task.await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_writes_no_status_and_does_not_touch_the_lease() {
    let api = TestApi::new().await;
    api.apply_yaml(GATEWAY);
    let first = replica(&api, lease("first")).await;
    eventually(10, "first leads", || async { leads(&first).await.then_some(()) }).await;
    let second = replica(&api, lease("second")).await;
    let sampler = LeaderSampler::start(&[&first, &second]);
    // The follower takes part: it reads the Lease.
    eventually(10, "second reads the lease", || async {
        api.requests()
            .iter()
            .any(|r| r.replica.as_deref() == Some("second") && r.path.starts_with(LEASES))
            .then_some(())
    })
    .await;

    api.apply_yaml(ROUTE);
    status_patch(&api, ROUTE_STATUS, |_| true).await;
    api.apply_yaml(&backend_yaml("a", "127.0.0.1:9".parse().unwrap()));
    status_patch(&api, ROUTE_STATUS, resolves).await;
    eventually(10, "the follower's graph has the change", || async {
        (resolved(&second, "AIGatewayRoute/default/r") == Some(true)).then_some(())
    })
    .await;
    settle().await;

    assert!(!leads(&second).await);
    assert_eq!(writers(&api, 0), BTreeSet::from(["first".to_string()]));
    let follower_lease_verbs: BTreeSet<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.replica.as_deref() == Some("second") && r.path.starts_with(LEASES))
        .map(|r| r.method)
        .collect();
    assert_eq!(follower_lease_verbs, BTreeSet::from(["GET".to_string()]));
    assert_eq!(sampler.most_leaders().await, 1);
    assert_eq!(holder(&api).as_deref(), Some("first"));
    first.shutdown().await;
    second.shutdown().await;
}

/// The API server answers everything but the Lease with success: the leader cannot renew, so it
/// stops writing status at once, and writes again (everything that changed meanwhile) once it
/// renews.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_refused_its_lease_stops_writing_status_until_it_renews() {
    let api = TestApi::new().await;
    api.apply_yaml(GATEWAY);
    api.apply_yaml(ROUTE);
    let only = replica(&api, lease("only")).await;
    status_patch(&api, ROUTE_STATUS, |_| true).await;
    assert!(leads(&only).await);

    api.fail(LEASES, Fault::Refuse(503));
    // Within the Lease's duration: before any other replica could take it over.
    eventually(2, "the leader steps down", || async { (!leads(&only).await).then_some(()) }).await;
    let written = api.patches().len();
    api.apply_yaml(&backend_yaml("a", "127.0.0.1:9".parse().unwrap()));
    eventually(10, "the route resolves", || async {
        (resolved(&only, "AIGatewayRoute/default/r") == Some(true)).then_some(())
    })
    .await;
    settle().await;
    assert_eq!(api.patches().len(), written, "a replica that cannot renew writes no status");

    api.heal();
    status_patch(&api, ROUTE_STATUS, resolves).await;
    assert!(leads(&only).await);
    assert_eq!(holder(&api).as_deref(), Some("only"));
    only.shutdown().await;
}

/// The leader's Lease requests get no answer (a broken network path): it must stop leading
/// before its Lease expires, because the other replica takes the Lease over then and two
/// writers must never overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_requests_hang_steps_down_before_another_takes_over() {
    let api = TestApi::new().await;
    api.apply_yaml(GATEWAY);
    api.apply_yaml(ROUTE);
    let first = replica(&api, lease("first")).await;
    status_patch(&api, ROUTE_STATUS, |_| true).await;
    let second = replica(&api, lease("second")).await;
    let sampler = LeaderSampler::start(&[&first, &second]);

    api.fail_for("first", LEASES, Fault::Hang);
    let written = api.patches().len();
    eventually(10, "second takes the expired lease over", || async {
        (holder(&api).as_deref() == Some("second")).then_some(())
    })
    .await;
    assert!(!leads(&first).await, "the old leader still says it leads");
    eventually(5, "second leads", || async { leads(&second).await.then_some(()) }).await;

    api.apply_yaml(&backend_yaml("a", "127.0.0.1:9".parse().unwrap()));
    status_patch(&api, ROUTE_STATUS, resolves).await;
    eventually(10, "first's graph has the change", || async {
        (resolved(&first, "AIGatewayRoute/default/r") == Some(true)).then_some(())
    })
    .await;
    settle().await;
    assert_eq!(writers(&api, written), BTreeSet::from(["second".to_string()]));

    // Reachable again, the old leader finds the Lease held and stays a follower.
    api.heal();
    let written = api.patches().len();
    settle().await;
    api.apply_yaml(&backend_yaml("b", "127.0.0.1:9".parse().unwrap()));
    status_patch(
        &api,
        "/apis/aigateway.envoyproxy.io/v1beta1/namespaces/default/aiservicebackends/b/status",
        |_| true,
    )
    .await;
    settle().await;
    assert_eq!(writers(&api, written), BTreeSet::from(["second".to_string()]));
    assert_eq!(holder(&api).as_deref(), Some("second"));
    assert_eq!(sampler.most_leaders().await, 1);
    first.shutdown().await;
    second.shutdown().await;
}

/// The leader loses the Lease while its status writes are slow: the write in flight lands, the
/// ones after it are left to the next leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_the_lease_while_writing_writes_no_more() {
    let api = TestApi::new().await;
    api.apply_yaml(GATEWAY);
    api.apply_yaml(ROUTE);
    api.apply_yaml(SECOND_ROUTE);
    let only = replica(&api, lease("only")).await;
    let second_status = ROUTE_STATUS.replace("/r/", "/r2/");
    status_patch(&api, ROUTE_STATUS, |_| true).await;
    status_patch(&api, &second_status, |_| true).await;

    // Both routes' status changes; the first write hangs.
    api.fail_writes("/status", Fault::Hang);
    api.apply_yaml(&backend_yaml("a", "127.0.0.1:9".parse().unwrap()));
    let patches = |api: &TestApi, path: &str| {
        api.requests().iter().filter(|r| r.method == "PATCH" && r.path == path).count()
    };
    eventually(10, "the first write is under way", || async {
        (patches(&api, ROUTE_STATUS) == 2).then_some(())
    })
    .await;
    // The renewal is refused: the replica no longer leads.
    let asked = api.requests_to(&format!("{LEASES}/aixds"));
    api.fail(LEASES, Fault::Refuse(500));
    eventually(5, "a renewal is refused", || async {
        (api.requests_to(&format!("{LEASES}/aixds")) > asked).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    api.heal_path("/status");
    eventually(5, "the replica says it no longer leads", || async {
        (!leads(&only).await).then_some(())
    })
    .await;
    settle().await;
    assert_eq!(patches(&api, &second_status), 1, "written after the Lease was lost");
    only.shutdown().await;
}

/// Three replicas start together and all find no Lease: all three create it at once, the API
/// server accepts one. From then on one replica leads and each status change is written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_for_the_lease_elect_one_leader_that_writes_each_change_once() {
    let api = TestApi::new().await;
    api.apply_yaml(GATEWAY);
    api.apply_yaml(ROUTE);
    // Every replica finds no Lease and creates it; the creates are held until all three are in,
    // then reach the API server together. A long Lease, so that no replica gives up on its held
    // create meanwhile (a round times out after a third of the duration).
    api.fail_writes(LEASES, Fault::Hang);
    let long = |identity: &str| LeaseOptions {
        duration: Duration::from_secs(60),
        ..LeaseOptions::new("default", identity)
    };
    let (a, b, c) =
        tokio::join!(replica(&api, long("a")), replica(&api, long("b")), replica(&api, long("c")),);
    let sampler = LeaderSampler::start(&[&a, &b, &c]);
    eventually(15, "every replica tries to create the lease", || async {
        let creating: BTreeSet<String> = api
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.starts_with(LEASES))
            .filter_map(|r| r.replica)
            .collect();
        (creating.len() == 3).then_some(())
    })
    .await;
    api.heal();

    let leader = eventually(10, "one replica leads", || async {
        let mut leading = Vec::new();
        for (name, r) in [("a", &a), ("b", &b), ("c", &c)] {
            if leads(r).await {
                leading.push(name.to_string());
            }
        }
        (leading.len() == 1).then(|| leading.remove(0))
    })
    .await;
    assert_eq!(holder(&api), Some(leader.clone()));

    status_patch(&api, ROUTE_STATUS, |_| true).await;
    api.apply_yaml(&backend_yaml("a", "127.0.0.1:9".parse().unwrap()));
    status_patch(&api, ROUTE_STATUS, resolves).await;
    api.apply_yaml(&backend_yaml("z", "127.0.0.1:9".parse().unwrap()));
    eventually(10, "every replica has the change", || async {
        let mut all = true;
        for r in [&a, &b, &c] {
            all &= r
                .graph
                .read()
                .unwrap()
                .object(&crate::kubernetes::key("Backend/default/z"))
                .is_some();
        }
        all.then_some(())
    })
    .await;
    settle().await;

    assert_eq!(writers(&api, 0), BTreeSet::from([leader.clone()]));
    let mut bodies: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in api.patches() {
        bodies.entry(p.path).or_default().push(p.body);
    }
    for (path, written) in &bodies {
        let distinct: BTreeSet<String> = written.iter().map(Value::to_string).collect();
        assert_eq!(distinct.len(), written.len(), "{path} was written twice: {written:#?}");
    }
    assert_eq!(sampler.most_leaders().await, 1);
    for r in [a, b, c] {
        r.shutdown().await;
    }
}
