//! Manifest files: multi-document YAML (or JSON) read into objects, with the location of each.
//!
//! [`ManifestSet`] holds what each file last gave and merges the files into one view: an object
//! defined identically in several files is one object; defined differently, it is a conflict
//! that names every file, and the first file's definition is the one used. It indexes which
//! files define each object and remembers which objects a read touched, so that a reader merges
//! only those ([`ManifestSet::take_touched`], [`ManifestSet::merged`]): an edit costs what the
//! edited file holds, not what every file holds. An object whose name
//! or namespace the API server would refuse is left out and reported with file and line, the
//! file's other objects kept. A file that fails to parse keeps the objects of its last good read;
//! the error is reported with file and line.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::api::{self, Object, ObjectKey, ParseOutcome};

/// A place in a manifest file (1-based line).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub path: PathBuf,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub location: Location,
    pub message: String,
    /// The file itself could not be read (it vanished, is not readable or is not UTF-8 text),
    /// as opposed to a problem in what it says.
    pub unreadable: bool,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// A document of a kind aixds does not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub location: Location,
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: skipping {} {} {}: aixds does not read this kind",
            self.location, self.api_version, self.kind, self.name
        )
    }
}

#[derive(Debug, Default)]
struct FileState {
    content_hash: u64,
    /// Objects of the last read without errors (shared with the parse cache: a document that
    /// did not change is not copied).
    objects: Vec<(Arc<Object>, Location)>,
    /// Where each object is in `objects`.
    index: HashMap<ObjectKey, Vec<usize>>,
    skipped: Vec<Skipped>,
    errors: Vec<FileError>,
    /// Objects left out for an invalid name or namespace. Unlike a parse error, one does not
    /// hold back the file's other objects.
    rejected: Vec<FileError>,
    /// What each document of the last read parsed to, by the hash of its text: an edit re-parses
    /// only the documents it touched.
    documents: HashMap<u64, Parsed>,
}

/// A document that parsed, without its location (which moves when lines above it change).
#[derive(Debug, Clone)]
enum Parsed {
    Object(Arc<Object>),
    Skipped { api_version: String, kind: String, name: String },
    Empty,
}

/// One object as the files define it.
#[derive(Debug, Clone)]
pub struct Merged<'a> {
    /// The first file's definition.
    pub object: &'a Object,
    pub locations: Vec<Location>,
    /// Set when the files disagree about the object.
    pub conflict: Option<String>,
}

#[derive(Debug, Default)]
pub struct ManifestSet {
    files: BTreeMap<PathBuf, FileState>,
    /// The files defining each object, in path order (the order definitions merge in).
    by_key: HashMap<ObjectKey, BTreeSet<PathBuf>>,
    /// Objects whose definitions or locations may have changed since the last
    /// [`ManifestSet::take_touched`].
    touched: HashSet<ObjectKey>,
}

impl ManifestSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `text` as the new content of `path`. Returns false when the content is unchanged.
    pub fn update(&mut self, path: &Path, text: &str) -> bool {
        let hash = api::hash_bytes(text.as_bytes());
        if self.files.get(path).is_some_and(|f| f.content_hash == hash && !f.objects.is_empty()) {
            return false;
        }
        let state = self.files.entry(path.to_path_buf()).or_default();
        let parsed = parse_file(path, text, &state.documents);
        state.documents = parsed.documents;
        state.content_hash = hash;
        state.skipped = parsed.skipped;
        state.errors = parsed.errors;
        state.rejected = parsed.rejected;
        // A broken edit keeps the last good objects; a first read keeps what did parse.
        if state.errors.is_empty() || state.objects.is_empty() {
            self.replace_objects(path, parsed.objects);
        }
        true
    }

    /// Makes `objects` what `path` defines, keeping the indexes and the touched set true: an
    /// object is touched when its definitions in the file or their lines changed, so that an
    /// edit of one object in a large file touches that object alone (unless it moves the lines
    /// of the others).
    fn replace_objects(&mut self, path: &Path, objects: Vec<(Arc<Object>, Location)>) {
        let Some(state) = self.files.get_mut(path) else { return };
        let mut index: HashMap<ObjectKey, Vec<usize>> = HashMap::new();
        for (i, (object, _)) in objects.iter().enumerate() {
            index.entry(object.key.clone()).or_default().push(i);
        }
        let old_objects = std::mem::replace(&mut state.objects, objects);
        let old_index = std::mem::replace(&mut state.index, index);
        let definitions =
            |objects: &[(Arc<Object>, Location)], at: &[usize]| -> Vec<(u64, usize)> {
                at.iter().map(|&i| (objects[i].0.content_hash, objects[i].1.line)).collect()
            };
        for (key, at) in &old_index {
            match state.index.get(key) {
                Some(now) => {
                    if definitions(&old_objects, at) != definitions(&state.objects, now) {
                        self.touched.insert(key.clone());
                    }
                }
                None => {
                    self.touched.insert(key.clone());
                    if let Some(files) = self.by_key.get_mut(key) {
                        files.remove(path);
                        if files.is_empty() {
                            self.by_key.remove(key);
                        }
                    }
                }
            }
        }
        for key in state.index.keys().filter(|k| !old_index.contains_key(*k)) {
            self.touched.insert(key.clone());
            self.by_key.entry(key.clone()).or_default().insert(path.to_path_buf());
        }
    }

    /// Records that `path` could not be read; its last objects stay.
    pub fn unreadable(&mut self, path: &Path, message: String) {
        let state = self.files.entry(path.to_path_buf()).or_default();
        state.content_hash = 0;
        let location = Location { path: path.to_path_buf(), line: 1 };
        state.errors = vec![FileError { location, message, unreadable: true }];
    }

    /// Forgets a file that was removed.
    pub fn remove(&mut self, path: &Path) -> bool {
        self.replace_objects(path, Vec::new());
        self.files.remove(path).is_some()
    }

    /// Forgets the file `path`, or every file under the directory `path` (removed or moved
    /// away).
    pub fn remove_under(&mut self, path: &Path) {
        let under: Vec<PathBuf> =
            self.files.keys().filter(|p| p.starts_with(path)).cloned().collect();
        for file in under {
            self.remove(&file);
        }
    }

    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.keys().map(PathBuf::as_path)
    }

    /// Documents that did not parse, and objects left out for an invalid name.
    pub fn errors(&self) -> impl Iterator<Item = &FileError> {
        self.files.values().flat_map(|f| f.errors.iter().chain(&f.rejected))
    }

    pub fn skipped(&self) -> impl Iterator<Item = &Skipped> {
        self.files.values().flat_map(|f| &f.skipped)
    }

    /// The objects whose definitions or locations may have changed since the last call (every
    /// object the files read or forgotten since then defined or define).
    pub fn take_touched(&mut self) -> HashSet<ObjectKey> {
        std::mem::take(&mut self.touched)
    }

    /// Every object the files define.
    pub fn keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.by_key.keys()
    }

    /// The object `key` as the files define it, `None` when none does.
    pub fn merged(&self, key: &ObjectKey) -> Option<Merged<'_>> {
        let mut merged: Option<Merged> = None;
        let mut differ = false;
        for path in self.by_key.get(key)? {
            let Some(file) = self.files.get(path) else { continue };
            let at = file.index.get(key).map(Vec::as_slice).unwrap_or_default();
            for (object, location) in at.iter().filter_map(|&i| file.objects.get(i)) {
                match &mut merged {
                    None => {
                        merged = Some(Merged {
                            object,
                            locations: vec![location.clone()],
                            conflict: None,
                        })
                    }
                    Some(m) => {
                        differ |= m.object.content_hash != object.content_hash;
                        m.locations.push(location.clone());
                    }
                }
            }
        }
        let mut merged = merged?;
        if differ {
            let places: Vec<String> = merged.locations.iter().map(|l| l.to_string()).collect();
            merged.conflict =
                Some(format!("defined differently in {}; using the first", places.join(" and ")));
        }
        Some(merged)
    }
}

struct ParsedFile {
    objects: Vec<(Arc<Object>, Location)>,
    skipped: Vec<Skipped>,
    errors: Vec<FileError>,
    rejected: Vec<FileError>,
    documents: HashMap<u64, Parsed>,
}

/// Parses every document of `text`, reusing `cache` for documents whose text is unchanged.
fn parse_file(path: &Path, text: &str, cache: &HashMap<u64, Parsed>) -> ParsedFile {
    let mut parsed = ParsedFile {
        objects: Vec::new(),
        skipped: Vec::new(),
        errors: Vec::new(),
        rejected: Vec::new(),
        documents: HashMap::new(),
    };
    for (start_line, doc) in split_documents(text) {
        let at = |line: usize| Location { path: path.to_path_buf(), line: start_line + line - 1 };
        // An object is located at its first line of content, past leading comments.
        let first = doc
            .lines()
            .position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map_or(1, |i| i + 1);
        let doc_hash = api::hash_bytes(doc.as_bytes());
        let outcome = match cache.get(&doc_hash) {
            Some(known) => known.clone(),
            None => match api::parse_document(&doc) {
                Ok(ParseOutcome::Object(object)) => Parsed::Object(Arc::from(object)),
                Ok(ParseOutcome::Skipped { api_version, kind, name }) => {
                    Parsed::Skipped { api_version, kind, name }
                }
                Ok(ParseOutcome::Empty) => Parsed::Empty,
                Err(e) => {
                    // At the end of its input the parser points past the document's last line.
                    let line = e.line().unwrap_or(1).min(doc.lines().count().max(1));
                    let location = at(line);
                    parsed.errors.push(FileError {
                        location,
                        message: e.to_string(),
                        unreadable: false,
                    });
                    continue;
                }
            },
        };
        match &outcome {
            // The API server would refuse the name; left out, it cannot reach another
            // object's Envoy names or references.
            Parsed::Object(object) => match object.key.validate() {
                Ok(()) => parsed.objects.push((object.clone(), at(first))),
                Err(message) => parsed.rejected.push(FileError {
                    location: at(first),
                    message: format!("{} left out: {message}", object.key.kind),
                    unreadable: false,
                }),
            },
            Parsed::Skipped { api_version, kind, name } => parsed.skipped.push(Skipped {
                location: at(first),
                api_version: api_version.clone(),
                kind: kind.clone(),
                name: name.clone(),
            }),
            Parsed::Empty => {}
        }
        parsed.documents.insert(doc_hash, outcome);
    }
    parsed
}

/// Splits YAML text at `---` lines. Yields (1-based line where the document starts, text). Lines
/// before a document's first line are kept blank so that parser line numbers stay exact.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let marker = line
            .strip_prefix("---")
            .filter(|rest| rest.is_empty() || rest.starts_with([' ', '\t']));
        if let Some(rest) = marker {
            docs.push((start, std::mem::take(&mut current)));
            start = line_no;
            // Content after the marker (`--- |`, `--- !tag`) belongs to the new document.
            current.push_str(&" ".repeat(3));
            current.push_str(rest);
            current.push('\n');
        } else if line == "..." {
            docs.push((start, std::mem::take(&mut current)));
            start = line_no + 1;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs.push((start, current));
    docs.retain(|(_, d)| !d.trim().is_empty());
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_markers_and_keeps_lines() {
        let docs = split_documents("a: 1\n---\nb: 2\n--- # c\n\nc: 3\n");
        assert_eq!(docs.iter().map(|d| d.0).collect::<Vec<_>>(), vec![1, 2, 4]);
        assert_eq!(docs[2].1.lines().position(|l| l == "c: 3"), Some(2));
    }

    #[test]
    fn reused_documents_are_located_where_they_are_now() {
        let doc = "apiVersion: v1\nkind: Secret\nmetadata: {name: a}\n";
        let path = Path::new("f.yaml");
        let mut set = ManifestSet::new();
        set.update(path, &format!("---\n{doc}"));
        let before = set.files[path].documents.clone();
        // Lines above the document change; its own text does not, so its parse is reused.
        set.update(path, &format!("# moved down\n\n---\n{doc}"));
        let after = &set.files[path].documents;
        assert!(before.keys().all(|k| after.contains_key(k)), "the document was reused");
        let key = set.keys().next().unwrap().clone();
        assert_eq!(set.merged(&key).unwrap().locations[0].line, 4);
    }

    #[test]
    fn error_line_is_the_file_line() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec:\n  ports: [{port: x}]\n";
        let parsed = parse_file(Path::new("f.yaml"), text, &HashMap::new());
        assert_eq!(parsed.objects.len(), 1);
        assert_eq!(parsed.errors.len(), 1, "{:?}", parsed.errors);
        assert_eq!(parsed.errors[0].location.line, 9, "{}", parsed.errors[0]);
    }
}
