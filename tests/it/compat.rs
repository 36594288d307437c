//! The upstream examples in shared/compat validate as their authors meant them: the output is
//! pinned by golden files, and the only problems are the true ones.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use aixds::api::{Kind, ObjectKey};
use aixds::cli::{Loaded, Report, Verdict, load};

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

/// Compares with `tests/golden/NAME`. With `UPDATE_GOLDEN=1` a differing file is rewritten and
/// the test still fails, naming what it rewrote: a run that rewrites can never pass, so a
/// variable left set cannot hide a change. Review the diff, then run again without it.
pub fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    let update = std::env::var_os("UPDATE_GOLDEN");
    if let Err(e) = check_golden(&path, actual, update.as_deref()) {
        panic!("{e}");
    }
}

fn check_golden(path: &Path, actual: &str, update: Option<&OsStr>) -> Result<(), String> {
    let update = match update {
        None => false,
        Some(v) if v == "1" => true,
        Some(other) => {
            return Err(format!(
                "UPDATE_GOLDEN is {:?}: set it to 1 to rewrite goldens, or unset it",
                other.to_string_lossy()
            ));
        }
    };
    let expected = std::fs::read_to_string(path);
    if expected.as_deref().ok() == Some(actual) {
        return Ok(());
    }
    if update {
        std::fs::write(path, actual).map_err(|e| format!("{}: {e}", path.display()))?;
        return Err(format!(
            "rewrote {} (UPDATE_GOLDEN=1); review the diff, then run again without UPDATE_GOLDEN",
            path.display()
        ));
    }
    match expected {
        Err(e) => {
            Err(format!("{}: {e} (run once with UPDATE_GOLDEN=1 to write it)", path.display()))
        }
        Ok(expected) => Err(format!(
            "{} differs (run once with UPDATE_GOLDEN=1 to rewrite it):\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        )),
    }
}

#[test]
fn golden_updates_rewrite_and_still_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.txt");
    std::fs::write(&path, "old\n").unwrap();
    assert!(check_golden(&path, "old\n", None).is_ok());
    assert!(check_golden(&path, "new\n", None).unwrap_err().contains("differs"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\n", "a check rewrites nothing");

    let err = check_golden(&path, "new\n", Some(OsStr::new("1"))).unwrap_err();
    assert!(err.contains("rewrote") && err.contains("g.txt"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
    assert!(check_golden(&path, "new\n", Some(OsStr::new("1"))).is_ok(), "nothing to rewrite");

    for value in ["", "0", "true", "yes"] {
        let err = check_golden(&path, "other\n", Some(OsStr::new(value))).unwrap_err();
        assert!(err.contains("set it to 1"), "{value:?}: {err}");
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
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
    assert_eq!(
        Report::new(&loaded).verdict(),
        Verdict::Problems,
        "the pool is in none of the files"
    );
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
