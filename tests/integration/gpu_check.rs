//! `scripts/gpu-check` and `scripts/build-cuda` as far as they run without a GPU: argument
//! handling, and gpu-check's dry run on CPU against the real service, report included.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{binary, describe, manifest_dir, tiny_model};

fn script(name: &str, args: &[&str]) -> Output {
    Command::new(manifest_dir().join("scripts").join(name))
        .args(args)
        .output()
        .expect("run the script")
}

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("gpu-check-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// A quick `--cpu` run on the tiny model; `program` says where the service binary is
/// (`--binary PATH` or `--dist DIR`).
fn dry_run(out: &Path, program: [&str; 2]) -> Output {
    let model = tiny_model();
    let mut args = vec!["--cpu", program[0], program[1]];
    args.extend([
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--streams",
        "2",
        "--reps",
        "1",
        "--max-tokens",
        "8",
        "--threads",
        "1",
    ]);
    script("gpu-check", &args)
}

#[test]
fn gpu_check_dry_run_on_cpu_checks_the_service_and_writes_the_report() {
    // The binary as `build-cuda --pack` ships it: xz-compressed, beside a BUILD-INFO.
    let out = scratch();
    let pack = out.path().join("pack");
    std::fs::create_dir(&pack).unwrap();
    let packed = std::fs::File::create(pack.join("leafresh-llm.xz")).unwrap();
    let xz = Command::new("xz")
        .args(["-0", "-T0", "-c", binary()])
        .stdout(packed)
        .output()
        .unwrap();
    assert!(xz.status.success(), "{}", describe(&xz));
    std::fs::write(pack.join("BUILD-INFO"), "archs=90\ncpu=x86-64-v3\n").unwrap();
    let output = dry_run(out.path(), ["--dist", pack.to_str().unwrap()]);
    assert!(output.status.success(), "{}", describe(&output));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("gpu-check.json")).unwrap())
            .unwrap();
    for check in ["base_info_close", "v1_stream", "offload"] {
        assert_eq!(report["checks"][check]["ok"], true, "{check}: {report}");
    }
    assert!(
        report["ours"]["decode_tps"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        report["ours"]["aggregate_tps"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(report["ours"]["base_info_ttft_cold"].as_f64().unwrap() > 0.0);
    let section = std::fs::read_to_string(out.path().join("gpu-check.md")).unwrap();
    assert!(section.starts_with("## GPU check: "), "{section}");
    assert!(section.contains("| base_info_close | pass"), "{section}");
    assert!(
        section.contains("| decode, 1 stream (tokens/s) |"),
        "{section}"
    );
    assert!(
        section.contains("Build: archs=90, cpu=x86-64-v3."),
        "{section}"
    );
}

#[test]
fn gpu_check_reports_a_service_that_never_answers_as_a_failed_check() {
    let out = scratch();
    let output = dry_run(out.path(), ["--binary", "/bin/false"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("gpu-check.json")).unwrap())
            .unwrap();
    assert_eq!(report["checks"]["start"]["ok"], false, "{report}");
    let section = std::fs::read_to_string(out.path().join("gpu-check.md")).unwrap();
    assert!(section.contains("| start | FAIL"), "{section}");
}

#[test]
fn gpu_check_refuses_bad_arguments_and_missing_files_naming_them() {
    let out = scratch();
    let out = out.path().to_str().unwrap();
    for (args, needle) in [
        (
            vec![
                "--cpu",
                "--out",
                out,
                "--binary",
                "/nonexistent/leafresh-llm",
            ],
            "/nonexistent/leafresh-llm",
        ),
        (
            vec![
                "--cpu",
                "--out",
                out,
                "--binary",
                binary(),
                "--model",
                "/nonexistent.gguf",
            ],
            "/nonexistent.gguf",
        ),
        (vec!["--cpu", "--out", out, "--reps", "0"], "--reps"),
        (vec!["--cpu"], "--out"),
    ] {
        let output = script("gpu-check", &args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            describe(&output)
        );
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(needle),
            "{args:?}: {}",
            describe(&output)
        );
    }
}

#[test]
fn gpu_check_without_an_nvidia_driver_says_so_and_how_to_dry_run() {
    if which("nvidia-smi") {
        return; // A machine with a GPU runs the real check.
    }
    let out = scratch();
    let model = tiny_model();
    let output = script(
        "gpu-check",
        &[
            "--binary",
            binary(),
            "--model",
            model.to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
        ],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nvidia-smi not found"), "{stderr}");
    assert!(stderr.contains("--cpu"), "{stderr}");
}

#[test]
fn build_cuda_refuses_an_architecture_list_it_cannot_pass_to_cmake() {
    for archs in ["8x", "89,90", "", "sm_90"] {
        let output = script("build-cuda", &["--archs", archs]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{archs}: {}",
            describe(&output)
        );
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("--archs"),
            "{}",
            describe(&output)
        );
    }
    let help = script("build-cuda", &["--help"]);
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in ["CMAKE_CUDA_ARCHITECTURES", "580", "libcublas.so.13"] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}
