//! Start-up: bad model files and settings are refused before the port is bound, with messages
//! that say what to do; a good model logs what was loaded and where it listens.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use leafresh_testmodel::TinyModelSpec;

use crate::support::{binary, client, free_port, tiny_model, tiny_model_with, Service};

/// Runs the service with `model` and expects it to exit by itself.
fn run_expecting_exit(model: &Path, extra: &[&str]) -> (Output, u16) {
    let port = free_port();
    let output = Command::new(binary())
        .arg("--model")
        .arg(model)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(extra)
        .env_remove("LEAFRESH_MODEL")
        .output()
        .expect("run leafresh-llm");
    (output, port)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_missing_model_exits_before_binding_with_the_absolute_path_and_the_download_hint() {
    let (output, port) = run_expecting_exit(Path::new("gguf/none.gguf"), &[]);
    assert!(!output.status.success());
    let message = stderr(&output);
    let absolute = std::env::current_dir().unwrap().join("gguf/none.gguf");
    assert!(
        message.contains(&absolute.display().to_string()),
        "{message}"
    );
    assert!(message.contains("scripts/download-model"), "{message}");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port was bound"
    );
}

#[test]
fn bad_model_files_give_a_clear_error_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let magic_only = dir.path().join("magic.gguf");
    std::fs::write(&magic_only, b"GGUF").unwrap();
    let text = dir.path().join("notes.gguf");
    std::fs::write(&text, "this is not a model, just some text\n".repeat(10)).unwrap();
    let truncated = dir.path().join("truncated.gguf");
    let full = std::fs::read(tiny_model()).unwrap();
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();

    for (path, expected) in [
        (&empty, "too short"),
        (&magic_only, "too short"),
        (&text, "GGUF magic"),
        (&truncated, "could not load"),
        (&dir.path().to_path_buf(), "not a regular file"),
    ] {
        let (output, port) = run_expecting_exit(path, &[]);
        let message = stderr(&output);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{}: {message}",
            path.display()
        );
        assert!(message.contains(expected), "{}: {message}", path.display());
        assert!(!message.contains("panicked"), "{message}");
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}

#[test]
fn invalid_settings_are_refused_naming_the_setting() {
    for (args, name) in [
        (&["--parallel", "0"][..], "--parallel"),
        (&["--ctx-size", "abc"][..], "--ctx-size"),
    ] {
        let (output, _) = run_expecting_exit(&tiny_model(), args);
        assert!(!output.status.success());
        assert!(stderr(&output).contains(name), "{}", stderr(&output));
    }
    // The environment twin is checked the same way.
    let output = Command::new(binary())
        .args(["--model"])
        .arg(tiny_model())
        .env("LEAFRESH_THREADS", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--threads"), "{}", stderr(&output));
}

#[test]
fn start_up_log_says_what_was_loaded_and_that_loopback_is_local_only() {
    let service = Service::start(&tiny_model(), &["--threads", "2", "--ctx-size", "2048"]);
    let log = service.log();
    for needle in [
        "model loaded",
        "tiny-llama.gguf",
        "layers=2",
        "context=2048",
        "threads=2",
        "gpu_layers=0",
    ] {
        assert!(log.contains(needle), "missing {needle:?} in:\n{log}");
    }
    assert!(
        log.contains(&format!("listening on {}", service.base_url())),
        "{log}"
    );
    assert!(log.contains("only this machine can connect"), "{log}");
    assert!(log.contains("--host 0.0.0.0"), "{log}");
}

#[test]
fn health_is_ok_once_the_model_is_loaded() {
    let service = Service::start(&tiny_model(), &[]);
    let response = client().get(service.url("/health")).send().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().unwrap(), r#"{"status":"ok"}"#);
}

#[test]
fn settings_llama_cpp_would_abort_on_are_refused_with_a_message() {
    // Each pair is in range on its own; before, the first aborted in llama.cpp (exit 134).
    for (args, names) in [
        (
            ["--parallel", "40", "--batch-size", "32"],
            ["--parallel", "--batch-size"],
        ),
        (
            ["--parallel", "64", "--ctx-size", "4096"],
            ["--parallel", "--ctx-size"],
        ),
    ] {
        let (output, _) = run_expecting_exit(&tiny_model(), &args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        for name in names {
            assert!(stderr.contains(name), "{args:?}: {stderr}");
        }
    }
    // The edge of each rule serves.
    let service = Service::start(
        &tiny_model(),
        &[
            "--parallel",
            "32",
            "--batch-size",
            "32",
            "--ctx-size",
            "4096",
        ],
    );
    let response = client()
        .post(service.url("/v1/chat/completions"))
        .json(&serde_json::json!({"model": "tiny-llama", "max_tokens": 4,
                                  "messages": [{"role": "user", "content": "안녕"}]}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// A shared library that makes opening a `.gguf` file slow (`fixtures/slow_model_open.c`),
/// compiled once per test run.
fn slow_model_open_library() -> PathBuf {
    let source =
        crate::support::manifest_dir().join("tests/integration/fixtures/slow_model_open.c");
    let library = Path::new(env!("CARGO_TARGET_TMPDIR")).join("slow_model_open.so");
    let output = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&library)
        .arg(&source)
        .arg("-ldl")
        .output()
        .expect("run cc");
    assert!(
        output.status.success(),
        "{}",
        crate::support::describe(&output)
    );
    library
}

#[test]
fn the_port_is_bound_only_after_the_model_is_loaded() {
    // Opening the model takes LOAD_DELAY more (a preloaded library delays llama.cpp's fopen), so
    // loading visibly lasts at least that long. A service that bound its port before loading
    // would answer during that window; this one must refuse every connection until it is done.
    const LOAD_DELAY: Duration = Duration::from_millis(2500);
    let port = free_port();
    let started = Instant::now();
    let mut child = Command::new(binary())
        .arg("--model")
        .arg(tiny_model())
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--threads",
            "1",
        ])
        .env("LD_PRELOAD", slow_model_open_library())
        .env("SLOW_MODEL_OPEN_MS", LOAD_DELAY.as_millis().to_string())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut refused_while_loading = 0;
    let answered = loop {
        let attempt = Instant::now();
        match client()
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
        {
            Ok(response) => break (attempt - started, response.status()),
            Err(e) => assert!(e.is_connect(), "{e}"),
        }
        if attempt - started < LOAD_DELAY {
            refused_while_loading += 1;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never healthy");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    let (after, status) = answered;
    assert!(
        after >= LOAD_DELAY,
        "answered {status} after {after:?}, while the model was still loading"
    );
    assert_eq!(status, 200);
    assert!(
        refused_while_loading >= 10,
        "only {refused_while_loading} connections were tried while loading"
    );
}

#[test]
fn a_model_without_a_chat_template_falls_back_to_mistral_format() {
    let spec = TinyModelSpec {
        chat_template: None,
        ..TinyModelSpec::default()
    };
    let model = tiny_model_with("tiny-no-template.gguf", &spec);
    let service = Service::start(&model, &[]);
    service.assert_logged("chat_template=mistral-v3 (fallback: the model file has none)");
    let url = service.url(&format!(
        "/ai/chatbot/recommendation/base-info?location={}&workType={}&category={}",
        crate::support::encode("도시"),
        crate::support::encode("사무직"),
        crate::support::encode("비건")
    ));
    let (status, _, events) = crate::support::get_events(&url);
    assert_eq!(status, 200);
    assert_eq!(events.last().unwrap().event, "close");
}

/// The check of the host's CPU that runs before anything else in the binary (`src/host_cpu.c`,
/// linked in by build.rs with the features the build enabled), compiled here into a program of its
/// own: built for a feature this host lacks, it stops with the feature's name before `main`; built
/// for what the host has, it lets the program run. (The service binary itself passes it on every
/// start of these tests.)
#[test]
fn a_build_for_a_cpu_feature_the_host_lacks_says_which_and_stops_before_main() {
    if !cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let main_c = dir.path().join("main.c");
    std::fs::write(&main_c, "int main(void) { return 7; }\n").unwrap();
    let guard = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/host_cpu.c");
    let run = |features: &str| {
        let program = dir.path().join("check");
        let built = Command::new("cc")
            .arg(format!("-DLEAFRESH_BUILT_FEATURES=\"{features}\""))
            .args([guard.as_os_str(), main_c.as_os_str(), "-o".as_ref()])
            .arg(&program)
            .output()
            .expect("cc runs");
        assert!(built.status.success(), "{}", stderr(&built));
        Command::new(&program).output().unwrap()
    };
    // sse2 is in every x86-64 CPU's flags; no kernel lists `leafresh_no_such_flag`.
    let runs = run("sse2:sse2");
    assert_eq!(runs.status.code(), Some(7), "{}", stderr(&runs));
    let refused = run("sse2:sse2 avx-test:leafresh_no_such_flag");
    assert_eq!(refused.status.code(), Some(1));
    let message = stderr(&refused);
    assert!(
        message.contains("built for a CPU with avx-test, which this host's CPU lacks"),
        "{message}"
    );
    assert!(
        message.contains("scripts/build --cpu x86-64-v3"),
        "{message}"
    );
}

#[test]
fn a_taken_port_exits_1_with_the_hint_every_time() {
    // The exit used to race the inference thread, still in a step, against llama.cpp's static
    // destructors: about one exit in seven on a busy machine was a SIGSEGV. Several in a row, each
    // with the threads busy (tests run beside each other), catch that.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    for attempt in 0..12 {
        let output = Command::new(binary())
            .arg("--model")
            .arg(tiny_model())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--threads", "1"])
            .env_remove("LEAFRESH_MODEL")
            .output()
            .expect("run leafresh-llm");
        assert_eq!(
            output.status.code(),
            Some(1),
            "attempt {attempt}: {}",
            crate::support::describe(&output)
        );
        let message = stderr(&output);
        assert!(
            message.contains("is another process using the port? choose another with --port"),
            "{message}"
        );
    }
}
