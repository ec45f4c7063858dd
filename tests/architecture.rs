//! The shape of the code, checked: the seams that let a second front end (tus)
//! and a second byte store plug in stay where they are drawn.
//! - Only the HTTP layer, startup and telemetry know actix: the core, the
//!   guards, the stores and the client compile their logic without it.
//! - The core never reaches up into a front end.
//! - No source file grows past ~600 lines; a file that does is split along
//!   these lines.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    files.sort();
    assert!(files.len() > 20, "the source tree was not found");
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("a readable source file");
            let name = p
                .strip_prefix(root)
                .expect("under the crate")
                .to_string_lossy()
                .into_owned();
            (name, text)
        })
        .collect()
}

/// The code of a file, without its comments (a doc may name actix).
fn code(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn only_the_http_layer_startup_and_telemetry_know_actix() {
    let allowed = |name: &str| {
        name.starts_with("src/http/") || name == "src/startup.rs" || name == "src/telemetry.rs"
    };
    let offenders: Vec<String> = src_files()
        .into_iter()
        .filter(|(name, text)| !allowed(name) && code(text).contains("actix"))
        .map(|(name, _)| name)
        .collect();
    assert!(
        offenders.is_empty(),
        "actix outside the HTTP layer: {offenders:?}"
    );
}

#[test]
fn the_core_does_not_reach_into_a_front_end() {
    let offenders: Vec<String> = src_files()
        .into_iter()
        .filter(|(name, text)| {
            name.starts_with("src/core/") && {
                let code = code(text);
                code.contains("crate::http") || code.contains("crate::client")
            }
        })
        .map(|(name, _)| name)
        .collect();
    assert!(
        offenders.is_empty(),
        "core importing a front end: {offenders:?}"
    );
}

#[test]
fn no_source_file_passes_600_lines() {
    let long: Vec<String> = src_files()
        .into_iter()
        .filter(|(_, text)| text.lines().count() > 600)
        .map(|(name, text)| format!("{name} ({} lines)", text.lines().count()))
        .collect();
    assert!(
        long.is_empty(),
        "split these along the code's seams: {long:?}"
    );
}
