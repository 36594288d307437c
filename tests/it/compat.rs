//! The upstream examples in shared/compat validate as their authors meant them: the output is
//! pinned by golden files, and the only problems are the true ones.

use std::path::{Path, PathBuf};

use aixds::api::{Kind, ObjectKey};
use aixds::cli::{Loaded, Report, load};

fn compat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/compat/envoy-ai-gateway")
}

pub fn load_compat(files: &[&str]) -> Loaded {
    let dir = compat_dir();
    let mut paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
    if files == ["basic-*.yaml"] {
        paths = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("basic-"))
            .collect();
    }
    load(paths).expect("compat files load")
}

/// Compares with `tests/golden/NAME`; `UPDATE_GOLDEN=1` rewrites the file instead.
pub fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert!(
        expected == actual,
        "{} differs:\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

fn report_text(loaded: &Loaded) -> String {
    let dir = format!("{}/", compat_dir().display());
    Report::new(loaded).text().replace(&dir, "")
}

/// (object, condition line) for every condition that is not True.
fn problems(loaded: &Loaded) -> Vec<(String, String)> {
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

#[test]
fn basic_examples() {
    let loaded = load_compat(&["basic-*.yaml"]);
    golden("compat-basic.txt", &report_text(&loaded));
    // The Azure backend's policy cannot give a credential: the backend is not served (and the
    // route says its backend is not resolved) rather than sent on without one.
    let unsupported = "BackendSecurityPolicy default/envoy-ai-gateway-basic-azure-credentials: \
                       type AzureCredentials is not supported yet";
    assert_eq!(
        problems(&loaded),
        [
            (
                "AIGatewayRoute/default/envoy-ai-gateway-basic-azure".to_string(),
                format!(
                    "ResolvedRefs BackendNotResolved: AIServiceBackend \
                     default/envoy-ai-gateway-basic-azure: {unsupported}"
                )
            ),
            (
                "AIServiceBackend/default/envoy-ai-gateway-basic-azure".to_string(),
                format!("ResolvedRefs InvalidPolicy: {unsupported}")
            ),
            (
                "BackendSecurityPolicy/default/envoy-ai-gateway-basic-azure-credentials"
                    .to_string(),
                "Accepted Unsupported: type AzureCredentials is not supported yet".to_string()
            )
        ]
    );
    assert!(!Report::new(&loaded).ok());
    assert_eq!(
        loaded.source.set().skipped().count(),
        3,
        "BackendTLSPolicy is read; three kinds are not"
    );
    assert_eq!(loaded.source.set().errors().count(), 0);
}

#[test]
fn inference_pool_examples() {
    let loaded = load_compat(&["inference-pool-base.yaml", "inference-pool-aigwroute.yaml"]);
    golden("compat-inference-pool.txt", &report_text(&loaded));
    assert_eq!(
        problems(&loaded),
        [(
            "AIGatewayRoute/default/inference-pool-with-aigwroute".to_string(),
            "ResolvedRefs BackendNotFound: InferencePool default/vllm-llama3-8b-instruct not found"
                .to_string()
        )]
    );
    assert!(Report::new(&loaded).ok(), "an unresolved reference does not reject the route");
    let kinds: Vec<&str> = loaded.source.set().skipped().map(|s| s.kind.as_str()).collect();
    assert!(kinds.contains(&"InferenceObjective") && kinds.contains(&"Deployment"), "{kinds:?}");
}

#[test]
fn identical_definitions_in_two_files_are_one_object() {
    let loaded = load_compat(&["basic-basic.yaml", "inference-pool-base.yaml"]);
    let key =
        ObjectKey::new(Kind::AIServiceBackend, "default", "envoy-ai-gateway-basic-testupstream");
    let node = loaded.graph.node(&key).unwrap();
    assert!(node.accepted() && node.resolved(), "{:?}", node.conditions());
    let files: Vec<String> = loaded
        .source
        .locations(&key)
        .iter()
        .map(|l| l.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["basic-basic.yaml", "inference-pool-base.yaml"]);
}
