//! The manifest source: only differences are handed out, broken edits keep the last good
//! objects, conflicts name both files, and the watcher wakes on edits.

use std::time::Duration;

use aixds::api::{Kind, ObjectKey, Spec};
use aixds::graph::{Graph, Reason};
use aixds::source::{Change, ManifestSource};

use crate::harness::write_atomic;

const POOL: &str = "apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata:
  name: llama
spec:
  selector:
    matchLabels: {app: llama}
  targetPorts: [{number: 8000}]
";

const BACKEND: &str = "apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata:
  name: b
  namespace: default
spec:
  schema: {name: OpenAI}
  backendRef: {name: llama, group: inference.networking.k8s.io, kind: InferencePool}
";

fn sync(source: &mut ManifestSource, graph: &mut Graph) -> Vec<String> {
    let changes = source.reload().expect("roots exist");
    let mut described: Vec<String> = changes
        .iter()
        .map(|c| match c {
            Change::Apply { object, .. } => format!("apply {}", object.key),
            Change::Delete(key) => format!("delete {key}"),
            Change::KindMissing { kind, .. } => format!("missing {kind}"),
        })
        .collect();
    for change in changes {
        change.apply_to(graph);
    }
    described.sort();
    described
}

#[test]
fn only_differences_are_applied_and_broken_edits_keep_objects() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    write_atomic(&a, format!("{BACKEND}---\n{POOL}"));
    let mut source = ManifestSource::new(vec![dir.path().to_path_buf()]);
    let mut graph = Graph::new();
    assert_eq!(
        sync(&mut source, &mut graph),
        ["apply AIServiceBackend/default/b", "apply InferencePool/default/llama"]
    );
    assert!(sync(&mut source, &mut graph).is_empty(), "nothing changed on disk");

    // Break the YAML on line 17 (inside the pool's selector): nothing is removed, the error says where.
    write_atomic(
        &a,
        format!("{BACKEND}---\n{}", POOL.replace("    matchLabels", "  matchLabels:\n - x")),
    );
    assert!(sync(&mut source, &mut graph).is_empty());
    let errors: Vec<String> = source.set().errors().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with(&format!("{}:17: ", a.display())), "{errors:?}");
    assert!(graph.object(&ObjectKey::new(Kind::InferencePool, "default", "llama")).is_some());

    // Fix it with a change to the pool only.
    write_atomic(&a, format!("{BACKEND}---\n{}", POOL.replace("8000", "8001")));
    assert_eq!(sync(&mut source, &mut graph), ["apply InferencePool/default/llama"]);
    assert_eq!(source.set().errors().count(), 0);

    std::fs::remove_file(&a).unwrap();
    assert_eq!(
        sync(&mut source, &mut graph),
        ["delete AIServiceBackend/default/b", "delete InferencePool/default/llama"]
    );
    assert!(graph.is_empty());
}

#[test]
fn a_pool_in_a_later_file_resolves_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    write_atomic(dir.path().join("backend.yaml"), BACKEND);
    let mut source = ManifestSource::new(vec![dir.path().to_path_buf()]);
    let mut graph = Graph::new();
    sync(&mut source, &mut graph);
    let b = ObjectKey::new(Kind::AIServiceBackend, "default", "b");
    assert!(!graph.node(&b).unwrap().resolved());
    write_atomic(dir.path().join("pool.yaml"), POOL);
    assert_eq!(sync(&mut source, &mut graph), ["apply InferencePool/default/llama"]);
    assert!(graph.node(&b).unwrap().resolved(), "{:?}", graph.node(&b).unwrap().conditions());
}

#[test]
fn different_definitions_are_a_conflict_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    write_atomic(dir.path().join("one.yaml"), POOL);
    write_atomic(dir.path().join("two.yaml"), POOL.replace("8000", "9000"));
    let mut source = ManifestSource::new(vec![dir.path().to_path_buf()]);
    let mut graph = Graph::new();
    sync(&mut source, &mut graph);
    let node = graph.node(&ObjectKey::new(Kind::InferencePool, "default", "llama")).unwrap();
    // Reported, but the first definition serves: what depends on it is unchanged.
    assert!(node.accepted());
    assert!(node.conflict().is_some());
    let Spec::InferencePool(pool) = &node.object.as_ref().unwrap().spec else { panic!() };
    assert_eq!(pool.target_ports[0].number, 8000, "the first definition");
    let c = &node.conditions()[0];
    assert_eq!(c.reason, Reason::Conflict);
    let d = dir.path().display();
    assert_eq!(
        c.message,
        format!("defined differently in {d}/one.yaml:1 and {d}/two.yaml:1; using the first")
    );

    // Making them identical resolves the conflict.
    write_atomic(dir.path().join("two.yaml"), POOL);
    assert_eq!(sync(&mut source, &mut graph), ["apply InferencePool/default/llama"]);
    let node = graph.node(&ObjectKey::new(Kind::InferencePool, "default", "llama")).unwrap();
    assert!(node.conditions().iter().all(|c| c.reason != Reason::Conflict));
}

#[test]
fn objects_with_invalid_names_are_left_out_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.yaml");
    let bad_name = BACKEND.replace("name: b\n", "name: x/y\n");
    let bad_namespace = BACKEND.replace("namespace: default", "namespace: default/x");
    let unicode = BACKEND.replace("name: b\n", "name: модель\n");
    let service =
        "apiVersion: v1\nkind: Service\nmetadata: {name: 9svc}\nspec: {ports: [{port: 1}]}\n";
    let text = [POOL, &bad_name, &bad_namespace, &unicode, service, BACKEND].join("---\n");
    write_atomic(&file, &text);
    let mut source = ManifestSource::new(vec![dir.path().to_path_buf()]);
    let mut graph = Graph::new();
    assert_eq!(
        sync(&mut source, &mut graph),
        ["apply AIServiceBackend/default/b", "apply InferencePool/default/llama"],
        "the valid objects of the file are kept"
    );
    assert!(
        graph.node(&ObjectKey::new(Kind::AIServiceBackend, "default", "b")).unwrap().resolved()
    );
    let errors: Vec<String> = source.set().errors().map(|e| e.to_string()).collect();
    let f = file.display();
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(errors[0].starts_with(&format!("{f}:10: AIServiceBackend left out: metadata.name \"x/y\" is not valid: an RFC 1123 subdomain")), "{errors:#?}");
    assert!(errors[1].starts_with(&format!("{f}:19: AIServiceBackend left out: metadata.namespace \"default/x\" is not valid: an RFC 1123 label")), "{errors:#?}");
    assert!(errors[2].contains("metadata.name \"модель\" is not valid"), "{errors:#?}");
    assert!(
        errors[3]
            .contains("Service left out: metadata.name \"9svc\" is not valid: an RFC 1035 label"),
        "{errors:#?}"
    );
}

#[test]
fn missing_root_is_an_error() {
    let mut source = ManifestSource::new(vec!["/nonexistent/aixds".into()]);
    let err = source.reload().unwrap_err().to_string();
    assert!(err.starts_with("/nonexistent/aixds: "), "{err}");
}

#[tokio::test]
async fn watcher_wakes_on_edit() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.yaml");
    write_atomic(&file, POOL);
    let mut watching = aixds::source::watch(
        std::slice::from_ref(&file),
        Duration::from_millis(20),
        Duration::from_millis(200),
    )
    .unwrap();
    write_atomic(&file, POOL.replace("8000", "8001"));
    tokio::time::timeout(Duration::from_secs(10), watching.wakeups.recv())
        .await
        .expect("a wake-up after the edit")
        .expect("channel open");
    let changed = std::mem::take(&mut *watching.changed.lock().unwrap());
    assert!(!changed.everything, "{changed:?}");
    let seen: Vec<_> = changed.paths.iter().filter_map(|p| p.file_name()).collect();
    assert!(seen.iter().any(|name| *name == "a.yaml"), "the edited file is named: {changed:?}");
}

/// A ConfigMap mounted by Kubernetes: each visible file is a link through the hidden `..data`,
/// which the kubelet swaps to a new hidden directory by renaming a new link over it. The swap
/// wakes the watcher and the changed files are read.
#[tokio::test]
async fn a_configmap_mount_update_is_read() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let version = |n: u32, text: &str| {
        let data = root.join(format!("..2026_12_04_0{n}"));
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("pool.yaml"), text).unwrap();
        data
    };
    let first = version(1, POOL);
    symlink(&first, root.join("..data")).unwrap();
    symlink("..data/pool.yaml", root.join("pool.yaml")).unwrap();
    let mut source = ManifestSource::new(vec![root.to_path_buf()]);
    let mut graph = Graph::new();
    sync(&mut source, &mut graph);
    let mut watching = aixds::source::watch(
        &[root.to_path_buf()],
        Duration::from_millis(20),
        Duration::from_millis(200),
    )
    .unwrap();

    let second = version(2, &POOL.replace("8000", "8001"));
    symlink(&second, root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    tokio::time::timeout(Duration::from_secs(10), watching.wakeups.recv())
        .await
        .expect("a wake-up after the swap")
        .expect("channel open");
    let changed = std::mem::take(&mut *watching.changed.lock().unwrap());
    assert!(changed.everything, "{changed:?}");
    let changes = source.reload_changed(changed).unwrap();
    let ports: Vec<String> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Apply { object, .. } => Some(format!("{:?}", object.spec)),
            _ => None,
        })
        .collect();
    assert_eq!(ports.len(), 1, "{changes:?}");
    assert!(ports[0].contains("8001"), "{}", ports[0]);
}
