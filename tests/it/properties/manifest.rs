//! The manifest parser on generated input: arbitrary bytes and YAML-ish multi-document files
//! never panic, every error names the file and a line of the document that is broken, and a
//! broken edit keeps the objects of the last good read.

use std::path::Path;

use aixds::source::{ManifestSet, ManifestSource};
use proptest::prelude::*;

const HEADERS: [&str; 9] = [
    "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\n",
    "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\n",
    "apiVersion: v1\nkind: Secret\n",
    "apiVersion: v1\nkind: Pod\n",
    "apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\n",
    "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n",
    "apiVersion: example.com/v1\nkind: Widget\n",
    "kind: Secret\n",
    "",
];

const METADATA: [&str; 7] = [
    "metadata: {name: a}\n",
    "metadata:\n  name: b\n  namespace: x\n",
    "metadata: {name: a, labels: {app: x}}\n",
    "metadata: {}\n",
    "metadata: [1, 2]\n",
    "metadata: {name: ''}\n",
    "",
];

const KEYS: [&str; 12] = [
    "spec",
    "rules",
    "stringData",
    "data",
    "status",
    "endpoints",
    "selector",
    "backendRefs",
    "- name",
    "- ",
    "x",
    "podIP",
];

const VALUES: [&str; 20] = [
    "",
    "{",
    "[a, b",
    "{name: x}",
    "&a {k: v}",
    "*a",
    "*nowhere",
    "!!binary aGk=",
    "'quoted'",
    "\"esc\\u00e9\"",
    "|",
    "- item",
    ": bad",
    "12",
    "~",
    "true",
    "{ip: {address: 10.0.0.1, port: 99999}}",
    "[{name: b, weight: -1}]",
    "\"\\q\"",
    "{a: 1, a: 2}",
];

fn line() -> impl Strategy<Value = String> {
    let indent = prop::sample::select(vec!["", "  ", "    ", "\t", " "]);
    let value = prop_oneof![4 => prop::sample::select(&VALUES[..]).prop_map(str::to_string), 1 => "[^\n]{0,10}"];
    prop_oneof![
        8 => (indent, prop::sample::select(&KEYS[..]), value).prop_map(|(i, k, v)| format!("{i}{k}: {v}\n")),
        1 => Just("# a comment\n".to_string()),
        1 => Just("\n".to_string()),
    ]
}

/// One document: maybe a kind, maybe metadata, then lines of anything.
fn document() -> impl Strategy<Value = String> {
    (
        prop::sample::select(&HEADERS[..]),
        prop::sample::select(&METADATA[..]),
        prop::collection::vec(line(), 0..6),
    )
        .prop_map(|(header, metadata, lines)| format!("{header}{metadata}{}", lines.concat()))
}

/// The documents of one file; the first line of each document's text in the joined file.
fn file(docs: &[String]) -> (String, Vec<usize>) {
    let mut text = String::new();
    let mut starts = Vec::new();
    for doc in docs {
        text.push_str("---\n");
        starts.push(text.lines().count() + 1);
        text.push_str(doc);
    }
    (text, starts)
}

/// Checks that every error of `set` is located in `path` on a line of a document that fails on
/// its own, and that the error reads `path:line: message`.
fn assert_errors_located(set: &ManifestSet, path: &Path, docs: &[String], starts: &[usize]) {
    for error in set.errors() {
        assert_eq!(error.location.path, path, "{error}");
        let line = error.location.line;
        let shown = error.to_string();
        assert!(shown.starts_with(&format!("{}:{line}: ", path.display())), "{shown}");
        // The document the line falls in (its `---` marker counts as its own).
        let doc = starts
            .iter()
            .rposition(|&s| s <= line + 1)
            .unwrap_or_else(|| panic!("line {line} is before every document: {shown}"));
        let end = starts[doc] + docs[doc].lines().count().max(1);
        assert!(
            line < end,
            "line {line} is past document {doc} (lines {}..{end}): {shown}",
            starts[doc]
        );
        let mut alone = ManifestSet::new();
        alone.update(Path::new("alone.yaml"), &docs[doc]);
        assert!(
            alone.errors().next().is_some(),
            "{shown}, but document {doc} parses on its own:\n{}",
            docs[doc]
        );
    }
}

proptest! {
    #![proptest_config(super::config(512))]

    /// 512 files of up to 5 YAML-ish documents: errors point into the broken document; a broken
    /// edit of a file that was good keeps its objects.
    #[test]
    fn yaml_ish_files_report_errors_where_they_are(
        docs in prop::collection::vec(document(), 1..6),
    ) {
        let path = Path::new("/manifests/gateway.yaml");
        let (text, starts) = file(&docs);
        let mut set = ManifestSet::new();
        set.update(path, &text);
        assert_errors_located(&set, path, &docs, &starts);

        let mut edited = ManifestSet::new();
        edited.update(path, "apiVersion: v1\nkind: Secret\nmetadata: {name: kept}\n");
        let before = sorted_keys(&edited);
        edited.update(path, &text);
        if edited.errors().next().is_some() {
            prop_assert_eq!(sorted_keys(&edited), before, "a broken edit keeps the last good objects");
        }
    }

    /// 512 byte strings, read as a file would be (lossily, as UTF-8).
    #[test]
    fn arbitrary_text_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let text = String::from_utf8_lossy(&bytes);
        let path = Path::new("/m/x.yaml");
        let mut set = ManifestSet::new();
        set.update(path, &text);
        let lines = text.lines().count().max(1);
        for error in set.errors() {
            prop_assert!(error.location.line >= 1 && error.location.line <= lines, "{} in {} lines", error, lines);
        }
        for key in set.keys() {
            prop_assert!(set.merged(key).is_some());
        }
    }
}

fn sorted_keys(set: &ManifestSet) -> Vec<aixds::api::ObjectKey> {
    let mut keys: Vec<_> = set.keys().cloned().collect();
    keys.sort();
    keys
}

proptest! {
    #![proptest_config(super::config(32))]

    /// 32 files of random bytes (often not UTF-8) read from disk by the manifest source.
    #[test]
    fn unreadable_files_are_errors_at_line_1(bytes in prop::collection::vec(any::<u8>(), 1..64)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bytes.yaml");
        std::fs::write(&path, &bytes).unwrap();
        let mut source = ManifestSource::new(vec![dir.path().to_path_buf()]);
        source.reload().expect("the directory is readable");
        for error in source.set().errors() {
            prop_assert_eq!(&error.location.path, &path);
            if std::str::from_utf8(&bytes).is_err() {
                prop_assert_eq!(error.location.line, 1);
                prop_assert!(error.message.contains("cannot read"), "{}", error);
            }
        }
    }
}

/// Found by `yaml_ish_files_report_errors_where_they_are`: a document cut short (an unclosed
/// `{` on its last line) was reported one line past its end, on the next document's marker.
#[test]
fn an_unclosed_document_is_reported_on_its_own_last_line() {
    let path = Path::new("/m/gateway.yaml");
    let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: a}\nstringData: {\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: b}\n";
    let mut set = ManifestSet::new();
    set.update(path, text);
    let errors: Vec<String> = set.errors().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("/m/gateway.yaml:4: "), "{errors:?}");
}

/// One step of a generated history of a manifest directory.
#[derive(Debug, Clone)]
enum Op {
    /// Writes document set `docs` (indexes into [`DOCS`]) to file `file` of [`FILES`].
    Write {
        file: usize,
        docs: Vec<usize>,
    },
    Remove {
        file: usize,
    },
    /// Removes the subdirectory and everything in it.
    RemoveDir,
}

/// Where files go: plain, in a subdirectory, hidden, and of an extension the source skips.
const FILES: [&str; 6] = ["a.yaml", "b.yml", "sub/c.yaml", "sub/d.json", ".hidden.yaml", "e.txt"];

/// Documents that define overlapping objects differently (conflicts), identically, with a
/// parse error and with an invalid name.
const DOCS: [&str; 6] = [
    "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {k: one}\n",
    "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {k: two}\n",
    "apiVersion: v1\nkind: Service\nmetadata: {name: svc}\nspec: {ports: [{port: 80}]}\n",
    "apiVersion: v1\nkind: Service\nmetadata: {name: svc}\nspec: {ports: [{port: x}]}\n",
    "apiVersion: v1\nkind: Secret\nmetadata: {name: Bad_Name}\n",
    "\n# moved\n\napiVersion: v1\nkind: Secret\nmetadata: {name: t}\n",
];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..FILES.len(), proptest::collection::vec(0..DOCS.len(), 0..4))
            .prop_map(|(file, docs)| Op::Write { file, docs }),
        2 => (0..FILES.len()).prop_map(|file| Op::Remove { file }),
        1 => Just(Op::RemoveDir),
    ]
}

/// What a source has handed out so far: key → (definition, conflict), and where each is.
type Seen = std::collections::BTreeMap<String, (String, Option<String>, Vec<String>)>;

fn take(source: &mut ManifestSource, changes: Vec<aixds::source::Change>, seen: &mut Seen) {
    use aixds::source::Change;
    for change in changes {
        match change {
            Change::Apply { object, conflict } => {
                let key = object.key.to_string();
                let at = source.locations(&object.key).iter().map(|l| l.to_string()).collect();
                seen.insert(key, (format!("{:?}", object.spec), conflict, at));
            }
            Change::Delete(key) => {
                seen.remove(&key.to_string());
            }
            Change::KindMissing { .. } => unreachable!("files have every kind"),
        }
    }
    // Locations move without the object changing (lines above it edited): read them all.
    for (key, entry) in seen.iter_mut() {
        let key = source_key(source, key);
        entry.2 = source.locations(&key).iter().map(|l| l.to_string()).collect();
    }
}

fn source_key(source: &ManifestSource, key: &str) -> aixds::api::ObjectKey {
    source.set().keys().find(|k| k.to_string() == key).cloned().expect("a handed-out key is held")
}

proptest! {
    #![proptest_config(super::config(48))]

    /// Reading only the paths the watcher names hands out exactly what reading every file does,
    /// and (while no file is broken) what a first read of the directory does: the same objects,
    /// conflicts and locations after every step.
    #[test]
    fn reading_changed_paths_equals_reading_everything(
        ops in proptest::collection::vec(op(), 1..12),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("m");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let mut partial = ManifestSource::new(vec![root.clone()]);
        let mut full = ManifestSource::new(vec![root.clone()]);
        let (mut seen_partial, mut seen_full) = (Seen::new(), Seen::new());
        let changes = partial.reload().unwrap();
        take(&mut partial, changes, &mut seen_partial);
        for op in ops {
            let changed = match &op {
                Op::Write { file, docs } => {
                    let path = root.join(FILES[*file]);
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    let text: Vec<&str> = docs.iter().map(|&d| DOCS[d]).collect();
                    std::fs::write(&path, text.join("---\n")).unwrap();
                    path
                }
                Op::Remove { file } => {
                    let path = root.join(FILES[*file]);
                    let _ = std::fs::remove_file(&path);
                    path
                }
                Op::RemoveDir => {
                    let _ = std::fs::remove_dir_all(root.join("sub"));
                    root.join("sub")
                }
            };
            let changed = aixds::source::Changed {
                paths: [changed].into_iter().collect(),
                everything: false,
            };
            let changes = partial.reload_changed(changed).unwrap();
            take(&mut partial, changes, &mut seen_partial);
            let changes = full.reload().unwrap();
            take(&mut full, changes, &mut seen_full);
            prop_assert_eq!(&seen_partial, &seen_full, "after {:?}", op);
            // And what a source reading the directory for the first time hands out, unless a
            // file is broken (a first read has no last good objects to keep).
            let mut fresh = ManifestSource::new(vec![root.clone()]);
            let mut seen_fresh = Seen::new();
            let changes = fresh.reload().unwrap();
            take(&mut fresh, changes, &mut seen_fresh);
            if fresh.set().errors().all(|e| e.message.contains("left out")) {
                prop_assert_eq!(&seen_partial, &seen_fresh, "after {:?}", op);
            }
            let errors = |s: &ManifestSource| s.set().errors().map(|e| e.to_string()).collect::<Vec<_>>();
            prop_assert_eq!(errors(&partial), errors(&full), "after {:?}", op);
        }
    }
}
