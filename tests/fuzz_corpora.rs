//! Replays every committed fuzz corpus (`fuzz/corpus/<target>/`: the seeds and the minimized
//! inputs of every crash found) through the same `rolegate::fuzzing` entry points the
//! cargo-fuzz targets call, on stable and in seconds. A target that no longer builds, an
//! invariant that no longer holds, or a fixed crash that comes back fails here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

/// Every cargo-fuzz target, by its name in `fuzz/Cargo.toml`.
const TARGETS: &[(&str, Target)] = &[
    ("jwt", rolegate::fuzzing::jwt),
    ("jwks", rolegate::fuzzing::jwks),
    ("discovery", rolegate::fuzzing::discovery),
    ("delegation_form", rolegate::fuzzing::delegation_form),
    ("delegation_json", rolegate::fuzzing::delegation_json),
    (
        "authn_request_redirect",
        rolegate::fuzzing::authn_request_redirect,
    ),
    ("authn_request_post", rolegate::fuzzing::authn_request_post),
    ("admission_review", rolegate::fuzzing::admission_review),
    ("sealed_cookie", rolegate::fuzzing::sealed_cookie),
    ("standalone_yaml", rolegate::fuzzing::standalone_yaml),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_cargo_fuzz_target_is_replayed_here() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    let declared: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|name| *name != "rolegate-fuzz")
        .collect();
    let replayed: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(declared, replayed);
    for name in declared {
        let source = std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{name}.rs")))
            .unwrap_or_else(|e| panic!("fuzz target {name}: {e}"));
        assert!(
            source.contains(&format!("rolegate::fuzzing::{name}(data)")),
            "fuzz target {name} must call rolegate::fuzzing::{name}"
        );
    }
}

#[test]
fn every_corpus_replays_cleanly() {
    for (name, target) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        assert!(
            corpus.len() >= 3,
            "fuzz/corpus/{name} holds {} inputs; seed it with real ones",
            corpus.len()
        );
        for input in corpus {
            let data = std::fs::read(&input).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(
                outcome.is_ok(),
                "fuzz target {name} fails on {}",
                input.display()
            );
        }
    }
}
