//! The built-in test page (`GET /`) driven by a real headless Chromium against the real service:
//! what a person sees when asking base-info for three challenges, and a validation error.
//!
//! Needs node, npm (only to install `tests/browser/node_modules` once) and Chromium (`CHROMIUM`,
//! default `/usr/bin/chromium`). Without them the test fails with a hint; it never skips, because a
//! skipped browser test looks exactly like a passing one.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{describe, manifest_dir, tiny_model, Service};

/// Runs `program --version`, failing the test with `hint` when the program is missing.
fn require(program: &str, hint: &str) {
    match Command::new(program).arg("--version").output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "`{program} --version` failed ({hint})\n{}",
            describe(&output)
        ),
        Err(err) => panic!("cannot run `{program}`: {err} ({hint})"),
    }
}

/// Installs playwright-core from the committed lock file unless it is already there.
fn ensure_node_modules(browser_dir: &Path) {
    if browser_dir.join("node_modules/playwright-core").is_dir() {
        return;
    }
    require("npm", "install Node.js and npm to run the browser test");
    // Run inside the directory rather than with `--prefix`: npm mistakes a `--prefix` reached
    // through a symlink for a linked package and then rejects the lock file.
    let output = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(browser_dir)
        .output()
        .expect("run npm ci");
    assert!(
        output.status.success(),
        "`npm ci` in tests/browser failed\n{}",
        describe(&output)
    );
}

#[test]
fn test_page_shows_three_cards_in_headless_chromium() {
    let browser_dir = manifest_dir().join("tests/browser");
    require("node", "install Node.js to run the browser test");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    require(
        &chromium,
        "install Chromium (`apt-get install chromium`) or set CHROMIUM to its path",
    );
    ensure_node_modules(&browser_dir);

    let screenshot: PathBuf = manifest_dir().join("target/test-artifacts/test_page.png");
    // A screenshot left over from an earlier run must not pass for this run's.
    let _ = std::fs::remove_file(&screenshot);

    let model = tiny_model();
    let service = Service::start(&model, &[]);
    let output = Command::new("node")
        .arg(browser_dir.join("page_test.mjs"))
        .arg(service.base_url())
        .arg(&screenshot)
        .env("CHROMIUM", &chromium)
        .current_dir(manifest_dir())
        .output()
        .expect("run node tests/browser/page_test.mjs");
    // Shown by the test harness on failure, or with --nocapture.
    println!("{}", describe(&output));
    assert!(
        output.status.success(),
        "the browser test of the test page failed\n{}",
        describe(&output)
    );

    let png = std::fs::read(&screenshot)
        .unwrap_or_else(|err| panic!("screenshot {} missing: {err}", screenshot.display()));
    assert!(
        png.len() > 8 && png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "screenshot {} is not a PNG ({} bytes)",
        screenshot.display(),
        png.len()
    );
}
