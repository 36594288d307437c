//! The upstream examples in `../shared/compat` validate as their authors meant them: the output
//! is pinned by golden files, and the only problems are the true ones.
//!
//! Those files sit beside the checkout in the project's CI only, never in a user's clone. Without
//! them each test that reads them says on stderr that it was skipped and why (`cargo test --
//! --show-output` prints it), and passes. Our own manifests in the same shapes
//! (`tests/fixtures/manifests/`, tests/it/manifests.rs) run everywhere.

use std::path::{Path, PathBuf};

use aixds::api::{Kind, ObjectKey};
use aixds::cli::{Loaded, Report, Verdict, load};

use crate::golden::golden;
use crate::harness::repo;
use crate::manifests::{problems, report_text};

/// The upstream examples' directory, or `None` (saying so on stderr) when it is not there.
pub fn compat_dir() -> Option<PathBuf> {
    let dir = repo().join("../shared/compat/envoy-ai-gateway");
    if dir.is_dir() {
        return Some(dir);
    }
    let thread = std::thread::current();
    eprintln!(
        "skipped {}: the upstream examples are not at {} (they sit beside the checkout in the \
         project's CI only; tests/fixtures/manifests/ covers the same shapes)",
        thread.name().unwrap_or("this test"),
        dir.display()
    );
    None
}

/// The named upstream files of `dir` (`basic-*.yaml`: every basic example).
pub fn load_compat(dir: &Path, files: &[&str]) -> Loaded {
    let paths: Vec<PathBuf> = if files == ["basic-*.yaml"] {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("basic-"))
            .collect()
    } else {
        files.iter().map(|f| dir.join(f)).collect()
    };
    load(paths).expect("compat files load")
}

#[test]
fn basic_examples() {
    let Some(dir) = compat_dir() else { return };
    let loaded = load_compat(&dir, &["basic-*.yaml"]);
    golden("compat-basic.txt", &report_text(&loaded, &dir));
    // The Azure backend's policy cannot give a credential (its tenant is a placeholder, which
    // no token endpoint's path can carry): the backend is not served (and the route says its
    // backend is not resolved) rather than sent on without one.
    let invalid = "azureCredentials.tenantID is not a tenant ID or domain name (letters, digits, \
                   '-' and '.')";
    let unsupported = format!(
        "BackendSecurityPolicy default/envoy-ai-gateway-basic-azure-credentials: {invalid}"
    );
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
                format!("Accepted Invalid: {invalid}")
            )
        ]
    );
    assert_eq!(Report::new(&loaded).verdict(), Verdict::Problems);
    assert_eq!(
        loaded.source.set().skipped().count(),
        3,
        "BackendTLSPolicy is read; three kinds are not"
    );
    assert_eq!(loaded.source.set().errors().count(), 0);
}

#[test]
fn inference_pool_examples() {
    let Some(dir) = compat_dir() else { return };
    let loaded = load_compat(&dir, &["inference-pool-base.yaml", "inference-pool-aigwroute.yaml"]);
    golden("compat-inference-pool.txt", &report_text(&loaded, &dir));
    // The route names a pool that upstream installs with the Inference Extension's chart, not
    // in these files.
    assert_eq!(
        problems(&loaded),
        [(
            "AIGatewayRoute/default/inference-pool-with-aigwroute".to_string(),
            "ResolvedRefs BackendNotFound: InferencePool default/vllm-llama3-8b-instruct not found"
                .to_string()
        )]
    );
    assert_eq!(Report::new(&loaded).verdict(), Verdict::Problems);
    let kinds: Vec<&str> = loaded.source.set().skipped().map(|s| s.kind.as_str()).collect();
    assert!(kinds.contains(&"InferenceObjective") && kinds.contains(&"Deployment"), "{kinds:?}");
}

#[test]
fn identical_definitions_in_two_files_are_one_object() {
    let Some(dir) = compat_dir() else { return };
    let loaded = load_compat(&dir, &["basic-basic.yaml", "inference-pool-base.yaml"]);
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
