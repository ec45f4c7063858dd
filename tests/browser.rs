//! The browser uploader (`static/`), tested where it runs: Node's test runner
//! checks its pure logic (`tests/browser/unit/`), and headless Chromium drives
//! the demo page against this build's `tranche` binary
//! (`tests/browser/e2e/`), which the tests start, kill and restart themselves.
//!
//! The module's TypeScript declarations (`static/tranche-upload.d.ts`) are
//! checked by `tsc --noEmit` on a typed example (`tests/browser/types/`).
//!
//! Needs node and npm and Debian's `chromium` (`bash .ci/run` installs them);
//! runs `npm ci --prefix tests/browser` (playwright-core, typescript) itself
//! when needed.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// What a test needs besides node.
#[derive(Clone, Copy, PartialEq)]
enum Needs {
    Node,
    /// `tests/browser/node_modules` (typescript).
    Modules,
    /// The modules (playwright-core) and Chromium.
    Browser,
}

/// Says what to install instead of failing somewhere inside node.
fn check_prerequisites(needs: Needs) {
    const HINT: &str = "`bash .ci/run` installs what the browser tests need";
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    assert!(
        node.is_ok_and(|s| s.success()),
        "node is not on PATH: apt-get install nodejs npm ({HINT})"
    );
    if needs == Needs::Node {
        return;
    }
    // One `npm ci` at a time: the tests of this file run in parallel.
    static NPM: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = NPM.lock().unwrap_or_else(|e| e.into_inner());
    if !suite_dir().join("node_modules/playwright-core").is_dir()
        || !suite_dir().join("node_modules/typescript").is_dir()
    {
        // playwright-core and typescript, pinned by the committed
        // package-lock.json; nothing downloads a browser.
        let npm = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(suite_dir())
            .status();
        assert!(
            npm.is_ok_and(|s| s.success()),
            "`npm ci --prefix tests/browser` failed ({HINT})"
        );
    }
    drop(guard);
    if needs != Needs::Browser {
        return;
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: apt-get install chromium, or set CHROMIUM ({HINT})"
    );
}

/// Runs `node --test` on the test files in `dir` with its output streaming to
/// the terminal, and kills the whole process group (node, Chromium, tranche)
/// if it overruns. Files are named one by one: Node 18 (Debian 12's) reads a
/// directory argument, later versions read glob patterns.
fn node_test(dir: &str, limit: Duration) {
    let mut files: Vec<String> = std::fs::read_dir(suite_dir().join(dir))
        .expect("test directory")
        .map(|e| format!("{dir}/{}", e.expect("entry").file_name().to_string_lossy()))
        .filter(|name| name.ends_with(".test.js"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.test.js in tests/browser/{dir}");
    let mut child = Command::new("node")
        .args(["--test", "--test-reporter=spec"])
        .args(&files)
        .current_dir(suite_dir())
        // Not TRANCHE_*: the server under test would read it as a setting.
        .env("E2E_TRANCHE_BIN", env!("CARGO_BIN_EXE_tranche"))
        .process_group(0)
        .spawn()
        .expect("start node");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            panic!("node --test {dir} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "node --test {dir} failed ({status}); its output is above"
    );
}

#[test]
fn uploader_logic_under_node() {
    check_prerequisites(Needs::Node);
    node_test("unit", Duration::from_secs(60));
}

#[test]
fn uploader_in_headless_chromium() {
    check_prerequisites(Needs::Browser);
    node_test("e2e", Duration::from_secs(240));
}

/// `static/tranche-upload.d.ts` types a small page that uses the uploader:
/// `tsc --noEmit` accepts it and rejects each mistake it marks with a
/// ts-expect-error directive. And the declarations name exactly the values
/// the module exports, so neither can gain or lose one unnoticed.
#[test]
fn uploader_typescript_declarations() {
    check_prerequisites(Needs::Modules);
    let tsc = Command::new(suite_dir().join("node_modules/.bin/tsc"))
        .args(["--noEmit", "-p", "types"])
        .current_dir(suite_dir())
        .status()
        .expect("run tsc");
    assert!(
        tsc.success(),
        "tsc --noEmit -p tests/browser/types failed; its output is above"
    );

    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("static/tranche-upload.js");
    let out = Command::new("node")
        .args([
            "--input-type=module",
            "-e",
            "const m = await import(process.argv[1]); console.log(Object.keys(m).sort().join(' '))",
        ])
        .arg(&module)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "node could not import {}",
        module.display()
    );
    let exported: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    let declarations = std::fs::read_to_string(module.with_extension("d.ts")).expect("the .d.ts");
    let mut declared: Vec<String> = declarations
        .lines()
        .filter_map(|l| {
            let rest = l
                .strip_prefix("export class ")
                .or_else(|| l.strip_prefix("export function "))?;
            Some(
                rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                    .next()?
                    .to_string(),
            )
        })
        .collect();
    declared.sort();
    assert_eq!(
        declared, exported,
        "static/tranche-upload.d.ts declares other values than the module exports"
    );
}
