//! Warm at boot: the instruction every Leafresh prompt begins with is computed before the
//! service is ready, and with `--prompt-cache-dir` loaded at the next start instead. A bad file
//! is computed again, never a crash.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{encode, get_events, logged_field, tiny_model, Service};

fn first_base_info_cached(service: &Service) -> usize {
    let (_, _, events) = get_events(&service.url(&format!(
        "/ai/chatbot/recommendation/base-info?location={}&workType={}&category={}",
        encode("바닷가"),
        encode("학생"),
        encode("플로깅")
    )));
    assert_eq!(events.last().unwrap().event, "close", "{events:?}");
    assert!(service.wait_for_log("request finished", 1, Duration::from_secs(5)));
    logged_field(&service.log(), "base-info", "cached_tokens")[0]
}

fn prefix_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn the_first_base_info_after_a_start_finds_the_instruction_cached() {
    let service = Service::start(&tiny_model(), &[]);
    service.assert_logged("instruction prefix computed");
    let instruction = crate::support::instruction_tokens();
    let cached = first_base_info_cached(&service);
    assert!(
        cached >= instruction,
        "cached {cached}, instruction {instruction}"
    );
}

#[test]
fn a_restart_loads_the_prefix_from_the_prompt_cache_dir() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("prompt-cache");
    let args = ["--prompt-cache-dir", cache.to_str().unwrap()];

    let first = Service::start(&tiny_model(), &args);
    first.assert_logged("instruction prefix computed");
    first.assert_logged("prompt prefix saved");
    drop(first);
    let files = prefix_files(&cache);
    assert_eq!(files.len(), 2, "a state file and its seal: {files:?}");

    let second = Service::start(&tiny_model(), &args);
    second.assert_logged("instruction prefix loaded from the prompt cache");
    let instruction = crate::support::instruction_tokens();
    assert!(first_base_info_cached(&second) >= instruction);
    assert_eq!(prefix_files(&cache), files, "nothing rewritten");
}

#[test]
fn a_truncated_corrupt_or_unsealed_file_is_computed_again_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().to_path_buf();
    let args = ["--prompt-cache-dir", cache.to_str().unwrap()];
    drop(Service::start(&tiny_model(), &args));
    let state = prefix_files(&cache)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "kv"))
        .expect("a state file");
    let whole = std::fs::read(&state).unwrap();

    for damage in ["truncated", "corrupt", "unsealed"] {
        match damage {
            "truncated" => std::fs::write(&state, &whole[..whole.len() / 2]).unwrap(),
            "corrupt" => std::fs::write(&state, vec![0x5a; whole.len()]).unwrap(),
            _ => std::fs::remove_file(state.with_extension("sum")).unwrap(),
        }
        let service = Service::start(&tiny_model(), &args);
        let log = service.log();
        assert_eq!(
            log.matches("prompt cache file not used").count(),
            1,
            "{damage}: one line says why\n{log}"
        );
        assert!(
            log.contains("instruction prefix computed"),
            "{damage}\n{log}"
        );
        assert!(first_base_info_cached(&service) > 0, "{damage}");
        drop(service);
        // Computed again and saved: the next start loads it.
        let again = Service::start(&tiny_model(), &args);
        assert!(
            again.log().contains("loaded from the prompt cache"),
            "{damage}"
        );
    }
}

#[test]
fn another_context_size_uses_another_file_and_the_old_one_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().to_str().unwrap().to_owned();
    drop(Service::start(
        &tiny_model(),
        &["--prompt-cache-dir", &cache],
    ));
    let before = prefix_files(dir.path());
    let other = Service::start(
        &tiny_model(),
        &["--prompt-cache-dir", &cache, "--ctx-size", "4096"],
    );
    other.assert_logged("instruction prefix computed");
    let after = prefix_files(dir.path());
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "{before:?} {after:?}"
    );
}
