//! Our own manifests in the shapes Envoy AI Gateway users write (`tests/fixtures/manifests/`)
//! validate as meant: the report is pinned by golden files and nothing in them is a problem.
//! Unlike the upstream examples (tests/it/compat.rs) they are in every checkout.

use std::path::PathBuf;

use aixds::api::{Kind, ObjectKey};
use aixds::cli::{Loaded, Report, Verdict, load};

use crate::golden::golden;
use crate::harness::repo;

/// `tests/fixtures/manifests/SET`.
pub fn fixture_dir(set: &str) -> PathBuf {
    repo().join("tests/fixtures/manifests").join(set)
}

/// Every file of one fixture set.
pub fn load_fixtures(set: &str) -> Loaded {
    load(vec![fixture_dir(set)]).expect("fixture files load")
}

/// The validation report with `dir/` left out of every path, so that it reads the same in any
/// checkout.
pub fn report_text(loaded: &Loaded, dir: &std::path::Path) -> String {
    Report::new(loaded).text().replace(&format!("{}/", dir.display()), "")
}

/// (object, condition line) for every condition that is not True.
pub fn problems(loaded: &Loaded) -> Vec<(String, String)> {
    loaded
        .graph
        .nodes()
        .into_iter()
        .flat_map(|n| {
            n.conditions().iter().filter(|c| !c.status).map(|c| {
                (n.key.to_string(), format!("{:?} {:?}: {}", c.type_, c.reason, c.message))
            })
        })
        .collect()
}

fn skipped_kinds(loaded: &Loaded) -> Vec<&str> {
    loaded.source.set().skipped().map(|s| s.kind.as_str()).collect()
}

#[test]
fn basic_set() {
    let loaded = load_fixtures("basic");
    golden("fixtures-basic.txt", &report_text(&loaded, &fixture_dir("basic")));
    assert_eq!(problems(&loaded), [] as [(String, String); 0]);
    assert_eq!(Report::new(&loaded).verdict(), Verdict::Ok);
    assert_eq!(skipped_kinds(&loaded), ["EnvoyProxy", "ClientTrafficPolicy", "Deployment"]);
    assert_eq!(loaded.source.set().errors().count(), 0);
    // Every keyed backend has its credential.
    for name in ["openai", "anthropic", "azure"] {
        let key = ObjectKey::new(Kind::AIServiceBackend, "default", name);
        let node = loaded.graph.node(&key).unwrap();
        assert!(node.accepted() && node.resolved(), "{key}: {:?}", node.conditions());
    }
}

#[test]
fn inference_pool_set() {
    let loaded = load_fixtures("inference-pool");
    golden("fixtures-inference-pool.txt", &report_text(&loaded, &fixture_dir("inference-pool")));
    assert_eq!(problems(&loaded), [] as [(String, String); 0]);
    assert_eq!(Report::new(&loaded).verdict(), Verdict::Ok);
    assert_eq!(
        skipped_kinds(&loaded),
        ["Deployment", "InferenceObjective", "ServiceAccount", "ConfigMap", "Role", "RoleBinding"]
    );
    assert_eq!(loaded.source.set().errors().count(), 0);
}

#[test]
fn identical_definitions_in_two_files_are_one_object() {
    let files = vec![fixture_dir("basic").join("gateway.yaml"), fixture_dir("inference-pool")];
    let loaded = load(files).unwrap();
    for key in [
        ObjectKey::new(Kind::AIServiceBackend, "default", "local-llama"),
        ObjectKey::new(Kind::Backend, "default", "local-llama"),
    ] {
        let node = loaded.graph.node(&key).unwrap();
        assert!(node.accepted() && node.resolved(), "{:?}", node.conditions());
        assert_eq!(node.conflict(), None);
        let files: Vec<String> = loaded
            .source
            .locations(&key)
            .iter()
            .map(|l| l.path.strip_prefix(fixture_dir("")).unwrap().display().to_string())
            .collect();
        assert_eq!(files, ["basic/gateway.yaml", "inference-pool/pool.yaml"]);
    }
}
