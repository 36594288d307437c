//! Server-side apply of status, as the status writer relies on it: first the test API server's
//! model of field ownership (driven with the same kube-rs calls the writer makes), then aixds's
//! writes next to another controller's.

use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use crate::harness::*;
use crate::kubeapi::TestApi;
use crate::kubernetes::{GATEWAY, ROUTE, backend_yaml, condition, lease, start, status_patch};

const ROUTE_STATUS: &str =
    "/apis/aigateway.envoyproxy.io/v1beta1/namespaces/default/aigatewayroutes/r/status";

fn routes(api: &TestApi) -> Api<DynamicObject> {
    let client = kube::Client::try_from(api.config()).unwrap();
    let resource = ApiResource {
        group: "aigateway.envoyproxy.io".into(),
        version: "v1beta1".into(),
        api_version: "aigateway.envoyproxy.io/v1beta1".into(),
        kind: "AIGatewayRoute".into(),
        plural: "aigatewayroutes".into(),
    };
    Api::namespaced_with(client, "default", &resource)
}

/// Server-side apply of `status` to route `r` by `manager`; the status the API server stored.
async fn apply(
    api: &TestApi,
    manager: &str,
    force: bool,
    status: Value,
) -> Result<Value, kube::Error> {
    let mut params = PatchParams::apply(manager);
    if force {
        params = params.force();
    }
    let patch = json!({
        "apiVersion": "aigateway.envoyproxy.io/v1beta1", "kind": "AIGatewayRoute",
        "metadata": {"name": "r", "namespace": "default"}, "status": status,
    });
    let stored = routes(api).patch_status("r", &params, &Patch::Apply(&patch)).await?;
    Ok(serde_json::to_value(stored).unwrap()["status"].clone())
}

/// A JSON merge patch of route `r`'s status by `manager` (an update, as `kubectl` or a controller
/// that does not apply makes).
async fn update(api: &TestApi, manager: &str, status: Value) -> Value {
    let params = PatchParams { field_manager: Some(manager.into()), ..Default::default() };
    let patch = json!({"status": status});
    let stored = routes(api).patch_status("r", &params, &Patch::Merge(&patch)).await.unwrap();
    serde_json::to_value(stored).unwrap()["status"].clone()
}

/// The status fields each manager owns, from `metadata.managedFields`.
fn owned(api: &TestApi) -> Value {
    let route = api.get("AIGatewayRoute", "default", "r").unwrap();
    let mut out = json!({});
    for entry in route["metadata"]["managedFields"].as_array().into_iter().flatten() {
        assert_eq!(entry["subresource"], "status");
        assert_eq!(entry["fieldsType"], "FieldsV1");
        let manager = entry["manager"].as_str().unwrap();
        out[manager] = entry["fieldsV1"]["f:status"].clone();
    }
    out
}

fn cond(type_: &str, status: &str) -> Value {
    json!({"type": type_, "status": status, "reason": type_, "message": ""})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_api_server_applies_status_with_field_ownership() {
    let api = TestApi::new().await;
    api.apply_yaml(ROUTE);

    // What a manager leaves out of its next apply is removed, lists being atomic.
    let first = json!({"conditions": [cond("Accepted", "True"), cond("ResolvedRefs", "False")],
                       "note": "n"});
    assert_eq!(apply(&api, "aixds", false, first.clone()).await.unwrap(), first);
    let second = json!({"conditions": [cond("Accepted", "True")]});
    assert_eq!(apply(&api, "aixds", false, second.clone()).await.unwrap(), second);
    assert_eq!(owned(&api), json!({"aixds": {"f:conditions": {}}}));

    // Another manager's fields are kept by an apply that does not name them.
    let stored = update(&api, "other", json!({"other": {"phase": "Ready"}})).await;
    assert_eq!(stored["other"]["phase"], "Ready");
    let third = json!({"conditions": [cond("Accepted", "False")]});
    let stored = apply(&api, "aixds", false, third).await.unwrap();
    assert_eq!(stored["other"], json!({"phase": "Ready"}));
    assert_eq!(stored["conditions"][0]["status"], "False");
    assert_eq!(
        owned(&api),
        json!({"aixds": {"f:conditions": {}}, "other": {"f:other": {"f:phase": {}}}})
    );

    // A field another manager changed since: 409 naming it, unless forced.
    update(&api, "other", json!({"conditions": [cond("Accepted", "Unknown")]})).await;
    let fourth = json!({"conditions": [cond("Accepted", "True")]});
    match apply(&api, "aixds", false, fourth.clone()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 409);
            assert!(s.message.contains(r#"conflict with "other": .status.conditions"#), "{s:?}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        api.get("AIGatewayRoute", "default", "r").unwrap()["status"]["conditions"][0]["status"],
        "Unknown",
        "a conflicting apply changes nothing"
    );
    let stored = apply(&api, "aixds", true, fourth).await.unwrap();
    assert_eq!(stored["conditions"][0]["status"], "True");
    assert_eq!(stored["other"], json!({"phase": "Ready"}));
    assert_eq!(
        owned(&api),
        json!({"aixds": {"f:conditions": {}}, "other": {"f:other": {"f:phase": {}}}})
    );

    // The same value is no conflict: both own it, and it stays while one of them does.
    let shared = json!({"conditions": [cond("Accepted", "True")], "other": {"phase": "Ready"}});
    apply(&api, "aixds", false, shared).await.unwrap();
    let stored = apply(&api, "aixds", false, json!({"conditions": []})).await.unwrap();
    assert_eq!(stored, json!({"conditions": [], "other": {"phase": "Ready"}}));

    // An apply needs a field manager, as at a real API server.
    let status = routes(&api)
        .patch_status("r", &PatchParams::default(), &Patch::Apply(&json!({"status": {}})))
        .await;
    assert!(matches!(status, Err(kube::Error::Api(s)) if s.code == 400));
}

/// Another controller writes its own field of a route's status, then overwrites aixds's
/// conditions: aixds's next write keeps the controller's field and takes its conditions back
/// (it applies with `force`), and the API server shows aixds owning what it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aixds_status_writes_keep_other_managers_fields_and_force_its_conditions() {
    let api = TestApi::new().await;
    api.apply_yaml(GATEWAY);
    api.apply_yaml(ROUTE);
    update(&api, "other", json!({"other": {"phase": "Ready"}})).await;
    let running = start(&api, Some(lease("ssa"))).await;
    status_patch(&api, ROUTE_STATUS, |_| true).await;
    let stored = api.get("AIGatewayRoute", "default", "r").unwrap();
    assert_eq!(stored["status"]["other"], json!({"phase": "Ready"}));
    assert_eq!(condition(&stored["status"]["conditions"], "ResolvedRefs")["status"], "False");

    update(&api, "other", json!({"conditions": [cond("Accepted", "Unknown")]})).await;
    // aixds's status for the route changes: its write must win over the other manager's.
    api.apply_yaml(&backend_yaml("a", "127.0.0.1:9".parse().unwrap()));
    eventually(10, "aixds's conditions are back at the API server", || async {
        let stored = api.get("AIGatewayRoute", "default", "r")?;
        let conditions = &stored["status"]["conditions"];
        (conditions.as_array()?.len() == 2
            && condition(conditions, "ResolvedRefs")["status"] == "True")
            .then_some(())
    })
    .await;
    let stored = api.get("AIGatewayRoute", "default", "r").unwrap();
    assert_eq!(stored["status"]["other"], json!({"phase": "Ready"}));
    assert_eq!(
        owned(&api),
        json!({"aixds": {"f:conditions": {}}, "other": {"f:other": {"f:phase": {}}}})
    );
    running.shutdown().await;
}
