//! Golden files in `tests/golden/`: the expected output of a test, compared byte for byte.

use std::ffi::OsStr;
use std::path::Path;

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
