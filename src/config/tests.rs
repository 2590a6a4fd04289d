//! Unit tests of `config` (a file of their own to keep `config.rs` short).

use super::*;

fn parse(args: &[&str]) -> Result<Config, clap::Error> {
    let mut all = vec!["leafresh-llm"];
    all.extend_from_slice(args);
    Config::try_parse_from(all)
}

#[test]
fn defaults_match_the_documented_ones() {
    let config = parse(&[]).unwrap();
    assert_eq!(config.model, PathBuf::from(DEFAULT_MODEL));
    assert_eq!(config.host.to_string(), "127.0.0.1");
    assert_eq!(config.port, 8000);
    assert_eq!(config.parallel, 4);
    assert_eq!(config.ctx_size, 8192);
}

#[test]
fn invalid_values_are_refused_naming_the_setting() {
    for (args, name) in [
        (&["--port", "0"][..], "--port"),
        (&["--port", "70000"][..], "--port"),
        (&["--parallel", "0"][..], "--parallel"),
        (&["--ctx-size", "10"][..], "--ctx-size"),
        (&["--threads=-1"][..], "--threads"),
        (&["--host", "not-an-ip"][..], "--host"),
    ] {
        let message = parse(args).unwrap_err().to_string();
        assert!(message.contains(name), "{args:?}: {message}");
    }
}

/// Each pair of settings that llama.cpp or the scheduler cannot serve is refused at start,
/// naming both settings.
#[test]
fn combinations_that_cannot_serve_are_refused_naming_both_settings() {
    for (args, names) in [
        (
            &["--parallel", "40", "--batch-size", "32"][..],
            ["--batch-size", "--parallel"],
        ),
        (
            &["--parallel", "64", "--batch-size", "32"][..],
            ["--batch-size", "--parallel"],
        ),
        (
            &["--parallel", "64", "--ctx-size", "4096"][..],
            ["--ctx-size", "--parallel"],
        ),
        (
            &["--parallel", "3", "--ctx-size", "256"][..],
            ["--ctx-size", "--parallel"],
        ),
    ] {
        let message = parse(args).unwrap().check().unwrap_err().to_string();
        for name in names {
            assert!(message.contains(name), "{args:?}: {message}");
        }
    }
    for args in [
        &["--parallel", "32", "--batch-size", "32"][..],
        &[
            "--parallel",
            "64",
            "--batch-size",
            "64",
            "--ctx-size",
            "8192",
        ][..],
        &[
            "--ctx-size",
            "256",
            "--parallel",
            "2",
            "--batch-size",
            "8192",
        ][..],
    ] {
        parse(args).unwrap().check().unwrap();
    }
}

#[test]
fn in_an_env_file_the_last_occurrence_wins_but_the_environment_wins_over_both() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.env");
    std::fs::write(
        &path,
        "LEAFRESH_TEST_TWICE=first\nLEAFRESH_TEST_TWICE=second\nLEAFRESH_TEST_PRESET=file\n",
    )
    .unwrap();
    std::env::set_var("LEAFRESH_TEST_PRESET", "environment");
    load_env_file(&path).unwrap();
    assert_eq!(std::env::var("LEAFRESH_TEST_TWICE").unwrap(), "second");
    assert_eq!(
        std::env::var("LEAFRESH_TEST_PRESET").unwrap(),
        "environment"
    );
}

#[test]
fn env_file_is_found_in_both_spellings() {
    let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
    assert_eq!(
        env_file_argument(&args(&["x", "--env-file", "a.env"])),
        Some(PathBuf::from("a.env"))
    );
    assert_eq!(
        env_file_argument(&args(&["x", "--port", "1", "--env-file=b.env"])),
        Some(PathBuf::from("b.env"))
    );
    assert_eq!(env_file_argument(&args(&["x"])), None);
}
