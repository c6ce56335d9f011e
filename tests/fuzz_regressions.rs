//! Replays saved fuzz inputs through the same code the `cargo fuzz` targets run: the seed
//! corpora (`fuzz/corpus-seeds/<target>/`) and every input that once crashed a target
//! (`tests/data/fuzz/<target>/`). Each must return without panicking.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs;
use std::path::{Path, PathBuf};

#[path = "../fuzz/src/lib.rs"]
mod harness;

/// The files of `<root>/<target>/`, sorted; none when the folder does not exist.
fn inputs(root: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(root)
        .join(target);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `target` on every seed and saved crash input; returns how many ran.
fn replay(target: &str, run: fn(&[u8])) -> usize {
    let mut count = 0;
    for root in ["fuzz/corpus-seeds", "tests/data/fuzz"] {
        for file in inputs(root, target) {
            let data = fs::read(&file).expect("readable input");
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                panic_with(&file);
            }
            count += 1;
        }
    }
    count
}

#[allow(clippy::panic)]
fn panic_with(file: &Path) -> ! {
    panic!("fuzz input {} panicked", file.display());
}

#[test]
fn classify_inputs_never_panic() {
    assert!(replay("classify", harness::classify_request) > 0);
}

#[test]
fn cookie_inputs_never_panic() {
    assert!(replay("cookies", harness::cookies) > 0);
}

#[test]
fn config_inputs_never_panic() {
    assert!(replay("config_yaml", harness::config_yaml) > 0);
}

#[test]
fn empty_and_tiny_inputs_never_panic() {
    for data in [&b""[..], b"\n", b"\x00", b"\xff\xfe", b":", b"GET"] {
        harness::classify_request(data);
        harness::cookies(data);
        harness::config_yaml(data);
    }
}
