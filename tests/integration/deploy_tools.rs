//! The deployment helpers as their users run them: `scripts/download-model` against local HTTP
//! servers (this machine may have no network), `uvicorn-compat/uvicorn` starting the real
//! service from the old `nohup uvicorn main:app ...` line, and the benchmark tools' copy of the
//! Leafresh request.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use leafresh_testmodel::{write_tiny_llama, TinyModelSpec};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::support::{binary, client, free_port};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const MODEL_FILE: &str = "Model-Q4_K_M.gguf";
const REPO: &str = "someone/Model-GGUF";

fn scratch_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("deploy-tools-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("scratch directory")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A process killed on drop (the test's HTTP servers).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// scripts/download-model

/// A file that starts like a GGUF model: the magic, then 3 MiB of varied bytes (several of the
/// script's 1 MiB reads, so a transfer can be cut in the middle).
fn fake_gguf() -> Vec<u8> {
    let mut data = b"GGUF".to_vec();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while data.len() < 3 * 1024 * 1024 + 123 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data
}

fn sha256_hex(path: &Path) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())",
        ])
        .arg(path)
        .output()
        .expect("python3");
    assert!(out.status.success());
    text(&out.stdout).trim().to_string()
}

/// Lays out `files` as a Hugging Face repository under `root` would answer them:
/// `<root>/<repo>/resolve/main/<name>`, plus a flat copy `<root>/<name>` for the scripted server.
fn publish(root: &Path, name: &str, data: &[u8]) -> PathBuf {
    let dir = root.join(REPO).join("resolve/main");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
    std::fs::write(root.join(name), data).unwrap();
    root.join(name)
}

/// `python3 -m http.server` on `root`: no Range support, Content-Length on every file.
fn plain_http_server(root: &Path) -> (KillOnDrop, String) {
    let port = free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--directory")
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    let guard = KillOnDrop(child);
    wait_until_listening(port, "http.server");
    (guard, format!("http://127.0.0.1:{port}"))
}

/// A scripted stand-in for huggingface.co, serving `<root>/<file name>` for any
/// `/<repo>/resolve/<rev>/<file name>`. Every request is appended to `<root>/requests.log` as
/// `path|Range|Authorization`. Modes:
/// - `range`: honours `Range: bytes=N-` (206 + Content-Range; 416 past the end);
/// - `norange`: ignores Range (200, the whole file);
/// - `gated`: 401 with `X-Error-Code: GatedRepo` unless `Authorization: Bearer good-token`;
/// - `redirect`: answers `/resolve/` with a 302 to `http://localhost:PORT/blob/<name>` (another
///   host name, as Hugging Face's CDN is) carrying `X-Linked-Size` and `X-Linked-Etag` (the
///   SHA-256 in `<root>/etag`);
/// - `flaky`: like `range`, but the first full download is cut off after 1.5 MiB.
const SCRIPTED_SERVER: &str = r#"
import http.server, os, sys
root, mode = sys.argv[1], sys.argv[2]
state = {"cut": False}

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, code, headers=(), body=b""):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        rng = self.headers.get("Range", "")
        auth = self.headers.get("Authorization", "")
        with open(os.path.join(root, "requests.log"), "a") as log:
            log.write(f"{self.path}|{rng}|{auth}\n")
        name = self.path.rsplit("/", 1)[-1]
        if mode == "gated" and auth != "Bearer good-token":
            return self.answer(401, [("X-Error-Code", "GatedRepo")],
                               b'{"error":"Access to model someone/Model-GGUF is restricted."}')
        if mode == "redirect" and "/resolve/" in self.path:
            size = os.path.getsize(os.path.join(root, name))
            etag = open(os.path.join(root, "etag")).read().strip()
            port = self.server.server_address[1]
            return self.answer(302, [("Location", f"http://localhost:{port}/blob/{name}"),
                                     ("X-Linked-Size", str(size)),
                                     ("X-Linked-Etag", f'"{etag}"')])
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            return self.answer(404, [("X-Error-Code", "EntryNotFound")], b"Entry not found")
        data = open(path, "rb").read()
        if rng.startswith("bytes=") and mode != "norange":
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                return self.answer(416, [("Content-Range", f"bytes */{len(data)}")])
            span = f"bytes {start}-{len(data) - 1}/{len(data)}"
            return self.answer(206, [("Content-Range", span)], data[start:])
        if mode == "flaky" and not state["cut"]:
            state["cut"] = True
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:1536 * 1024])
            self.wfile.flush()
            self.close_connection = True
            return
        return self.answer(200, [], data)

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

fn scripted_server(root: &Path, mode: &str) -> (KillOnDrop, String) {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(SCRIPTED_SERVER)
        .arg(root)
        .arg(mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 scripted server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("the server's port");
    let port: u16 = line.trim().parse().expect("a port number");
    (KillOnDrop(child), format!("http://127.0.0.1:{port}"))
}

fn requests(root: &Path) -> Vec<String> {
    std::fs::read_to_string(root.join("requests.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Runs `scripts/download-model` with `args`, the model repo and file of these tests, and
/// `--out-dir out`; no HF_TOKEN unless `token` is given.
fn download(base_url: &str, out: &Path, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(Path::new(ROOT).join("scripts/download-model"));
    command
        .args(["--base-url", base_url, "--repo", REPO, "--file", MODEL_FILE])
        .arg("--out-dir")
        .arg(out)
        .args(["--retries", "2"])
        .args(args)
        .env_remove("HF_TOKEN")
        .env_remove("HF_ENDPOINT")
        .env_remove("LEAFRESH_MODEL_REPO")
        .env_remove("LEAFRESH_MODEL_FILE");
    if let Some(token) = token {
        command.env("HF_TOKEN", token);
    }
    command.output().expect("run scripts/download-model")
}

/// Asserts a failure said in one line (no traceback) and returns it.
fn one_line_failure(output: &Output) -> String {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("Traceback"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    errors[0].to_string()
}

fn assert_finished(out: &Path, expected: &[u8], output: &Output) {
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    let finished = out.join(MODEL_FILE);
    assert!(
        std::fs::read(&finished).unwrap() == expected,
        "content differs"
    );
    assert!(!out.join(format!("{MODEL_FILE}.part")).exists());
    let argument = format!("--model {}", finished.display());
    assert!(stdout.contains(&argument), "{stdout}");
}

#[test]
fn download_model_help_explains_the_token_the_checks_and_resuming() {
    let output = Command::new(Path::new(ROOT).join("scripts/download-model"))
        .arg("--help")
        .output()
        .unwrap();
    let help = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    for needle in [
        "HF_TOKEN",
        "--sha256",
        "--size",
        "--repo",
        "--file",
        "--out-dir",
        "LEAFRESH_MODEL_REPO",
        "accept its licence",
        ".part",
        "Range",
        "bartowski/Mistral-7B-Instruct-v0.3-GGUF",
        "--model",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[test]
fn download_model_offline_fails_in_one_line_and_keeps_the_partial_file() {
    let dir = scratch_dir();
    let out = dir.path().join("gguf");
    // Nothing listens on a port that was just free.
    let unreachable = format!("http://127.0.0.1:{}", free_port());

    let output = download(&unreachable, &out, None, &[]);
    let line = one_line_failure(&output);
    assert!(
        line.contains("cannot connect") && line.contains("no network"),
        "{line}"
    );
    assert!(!out.join(MODEL_FILE).exists());

    // With a partial download from before: kept for the next run, still not finished.
    let data = fake_gguf();
    let part = out.join(format!("{MODEL_FILE}.part"));
    std::fs::write(&part, &data[..1000]).unwrap();
    let output = download(&unreachable, &out, None, &[]);
    let line = one_line_failure(&output);
    assert!(
        line.contains("run the same command again to resume"),
        "{line}"
    );
    assert_eq!(std::fs::read(&part).unwrap(), &data[..1000]);
    assert!(!out.join(MODEL_FILE).exists());
}

#[test]
fn download_model_from_a_plain_http_server_checks_the_sha256() {
    let dir = scratch_dir();
    let data = fake_gguf();
    let source = publish(dir.path(), MODEL_FILE, &data);
    let sha = sha256_hex(&source);
    let (_server, url) = plain_http_server(dir.path());

    let wrong_out = dir.path().join("wrong");
    let wrong = "0".repeat(64);
    let output = download(&url, &wrong_out, None, &["--sha256", &wrong]);
    let line = one_line_failure(&output);
    assert!(
        line.contains("SHA-256 mismatch") && line.contains(&sha),
        "{line}"
    );
    assert!(!wrong_out.join(MODEL_FILE).exists());
    // The stated value may be the mistake: the download is kept under the partial name.
    assert!(wrong_out.join(format!("{MODEL_FILE}.part")).exists());

    let out = dir.path().join("right");
    let output = download(&url, &out, None, &["--sha256", &sha.to_uppercase()]);
    assert_finished(&out, &data, &output);
    assert!(text(&output.stdout).contains(&sha));

    // Run again: the finished file is checked, not downloaded again.
    let output = download(&url, &out, None, &["--sha256", &sha]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("exists; checking it"));
}

#[test]
fn download_model_refuses_a_file_that_is_not_gguf() {
    let dir = scratch_dir();
    let page = b"<!DOCTYPE html><html><body>Log in to continue</body></html>\n".repeat(100);
    publish(dir.path(), MODEL_FILE, &page);
    let (_server, url) = plain_http_server(dir.path());

    let out = dir.path().join("gguf");
    let output = download(&url, &out, None, &[]);
    let line = one_line_failure(&output);
    assert!(
        line.contains("not a GGUF file") && line.contains("HTML"),
        "{line}"
    );
    assert!(!out.join(MODEL_FILE).exists());
    assert!(!out.join(format!("{MODEL_FILE}.part")).exists());
}

#[test]
fn download_model_size_mismatch_leaves_no_finished_file() {
    let dir = scratch_dir();
    let data = fake_gguf();
    publish(dir.path(), MODEL_FILE, &data);
    let (_server, url) = plain_http_server(dir.path());

    let out = dir.path().join("gguf");
    let output = download(&url, &out, None, &["--size", "12345"]);
    let line = one_line_failure(&output);
    assert!(line.contains("12345"), "{line}");
    assert!(!out.join(MODEL_FILE).exists());
}

#[test]
fn download_model_resumes_a_partial_file_with_a_range_request() {
    let dir = scratch_dir();
    let data = fake_gguf();
    let source = publish(dir.path(), MODEL_FILE, &data);
    let sha = sha256_hex(&source);
    let (_server, url) = scripted_server(dir.path(), "range");

    let out = dir.path().join("gguf");
    std::fs::create_dir_all(&out).unwrap();
    let half = data.len() / 2;
    std::fs::write(out.join(format!("{MODEL_FILE}.part")), &data[..half]).unwrap();

    let output = download(&url, &out, None, &["--sha256", &sha]);
    assert_finished(&out, &data, &output);
    assert!(text(&output.stderr).contains("resuming"));
    assert_eq!(
        requests(dir.path()),
        vec![format!("/{REPO}/resolve/main/{MODEL_FILE}|bytes={half}-|")]
    );

    // A .part that is already whole (a run stopped before the rename): the server answers 416
    // to the range past its end, and the file is checked and finished without a transfer.
    let whole = dir.path().join("whole");
    std::fs::create_dir_all(&whole).unwrap();
    std::fs::write(whole.join(format!("{MODEL_FILE}.part")), &data).unwrap();
    let output = download(&url, &whole, None, &["--sha256", &sha]);
    assert_finished(&whole, &data, &output);
    assert!(requests(dir.path())[1].ends_with(&format!("|bytes={}-|", data.len())));
}

#[test]
fn download_model_starts_over_when_the_server_ignores_range() {
    let dir = scratch_dir();
    let data = fake_gguf();
    let source = publish(dir.path(), MODEL_FILE, &data);
    let sha = sha256_hex(&source);
    let (_server, url) = scripted_server(dir.path(), "norange");

    let out = dir.path().join("gguf");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join(format!("{MODEL_FILE}.part")),
        &data[..data.len() / 2],
    )
    .unwrap();

    let output = download(&url, &out, None, &["--sha256", &sha]);
    assert_finished(&out, &data, &output);
    assert!(text(&output.stderr).contains("does not support resuming"));
}

#[test]
fn download_model_resumes_by_itself_when_the_transfer_breaks_off() {
    let dir = scratch_dir();
    let data = fake_gguf();
    publish(dir.path(), MODEL_FILE, &data);
    let (_server, url) = scripted_server(dir.path(), "flaky");

    let out = dir.path().join("gguf");
    let output = download(&url, &out, None, &[]);
    assert_finished(&out, &data, &output);
    let log = requests(dir.path());
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[1].contains("|bytes="), "{log:?}");
}

#[test]
fn download_model_explains_gated_access_and_sends_hf_token() {
    let dir = scratch_dir();
    let data = fake_gguf();
    publish(dir.path(), MODEL_FILE, &data);
    let (_server, url) = scripted_server(dir.path(), "gated");

    let out = dir.path().join("gguf");
    let output = download(&url, &out, None, &[]);
    let line = one_line_failure(&output);
    for needle in [
        "401",
        "gated",
        "accept its licence",
        "HF_TOKEN",
        "settings/tokens",
    ] {
        assert!(line.contains(needle), "lacks {needle}: {line}");
    }
    assert!(!out.join(MODEL_FILE).exists());

    let output = download(&url, &out, Some("good-token"), &[]);
    assert_finished(&out, &data, &output);
    assert!(requests(dir.path())
        .last()
        .unwrap()
        .ends_with("|Bearer good-token"));
}

#[test]
fn download_model_uses_hugging_faces_announced_sha256_and_keeps_the_token_from_the_cdn() {
    let dir = scratch_dir();
    let data = fake_gguf();
    let source = publish(dir.path(), MODEL_FILE, &data);
    let (_server, url) = scripted_server(dir.path(), "redirect");

    // A wrong announced SHA-256: refused, although no --sha256 was given.
    std::fs::write(dir.path().join("etag"), "1".repeat(64)).unwrap();
    let out = dir.path().join("gguf");
    let output = download(&url, &out, Some("secret"), &[]);
    let line = one_line_failure(&output);
    assert!(line.contains("X-Linked-Etag"), "{line}");
    assert!(!out.join(MODEL_FILE).exists());
    // Resuming cannot repair it: removed, so the next run downloads it afresh.
    assert!(!out.join(format!("{MODEL_FILE}.part")).exists());

    std::fs::write(dir.path().join("etag"), sha256_hex(&source)).unwrap();
    let output = download(&url, &out, Some("secret"), &[]);
    assert_finished(&out, &data, &output);
    for request in requests(dir.path()) {
        let (path, auth) = request.rsplit_once('|').unwrap();
        if path.starts_with("/blob/") {
            assert_eq!(auth, "", "the token went to the CDN host");
        } else {
            assert_eq!(auth, "Bearer secret");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// uvicorn-compat/uvicorn

/// A service started in the background by a shell, as `nohup ... &` does: not our child, so it
/// is stopped by its process id (SIGTERM, then SIGKILL), also when the test fails.
struct Detached {
    pid: u32,
    port: u16,
    log: PathBuf,
}

impl Detached {
    fn alive(&self) -> bool {
        // A zombie (exited, not yet reaped by its new parent) counts as gone.
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .map(|stat| {
                let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                !state.starts_with('Z')
            })
            .unwrap_or(false)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client()
                .get(format!("http://127.0.0.1:{}/health", self.port))
                .send()
            {
                if r.status().is_success() {
                    assert_eq!(r.text().unwrap(), r#"{"status":"ok"}"#);
                    return;
                }
            }
            assert!(self.alive(), "the service exited:\n{}", self.log());
            assert!(
                Instant::now() < deadline,
                "no /health after 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        for signal in ["-TERM", "-KILL"] {
            let _ = Command::new("kill")
                .args([signal, &self.pid.to_string()])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if !self.alive() {
                return;
            }
        }
    }
}

/// A directory holding the tiny model under `gguf/` and an old-style `.env` naming it by a
/// path relative to the env file, plus `extra` lines.
fn old_app_dir(extra: &str) -> (TempDir, PathBuf) {
    let dir = scratch_dir();
    std::fs::create_dir_all(dir.path().join("gguf")).unwrap();
    write_tiny_llama(
        &dir.path().join("gguf/tiny.gguf"),
        &TinyModelSpec::default(),
    )
    .expect("write the tiny model");
    let env_file = dir.path().join(".env");
    std::fs::write(
        &env_file,
        format!(
            "# the old app's settings\nMODEL_PATH=gguf/tiny.gguf\nHF_TOKEN=unused\n\
             LEAFRESH_THREADS=1\n{extra}"
        ),
    )
    .unwrap();
    (dir, env_file)
}

fn compat_dir() -> PathBuf {
    Path::new(ROOT).join("uvicorn-compat")
}

/// Runs `line` with `bash -c` in `cwd`, uvicorn-compat first on PATH, and the real binary as
/// LEAFRESH_BIN; `line` must start the service in the background and `echo $!`.
fn run_old_line(line: &str, cwd: &Path, port: u16, log: PathBuf) -> Detached {
    let path = format!(
        "{}:{}",
        compat_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("bash");
    command
        .args(["-c", line])
        .current_dir(cwd)
        .env("PATH", path)
        .env("LEAFRESH_BIN", binary())
        .env_remove("RUST_LOG");
    clear_settings_env(&mut command);
    let output = command.output().expect("bash");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let pid = text(&output.stdout)
        .trim()
        .parse()
        .expect("the pid from $!");
    Detached { pid, port, log }
}

#[test]
fn the_old_nohup_uvicorn_line_starts_the_service_with_the_env_files_model_path() {
    let (dir, env_file) = old_app_dir("");
    let port = free_port();
    let log = dir.path().join("uvicorn.log");
    // Started from elsewhere: MODEL_PATH is relative to the env file, not to the working directory.
    let cwd = scratch_dir();
    let line = format!(
        "nohup uvicorn main:app --host 127.0.0.1 --port {port} --env-file {} > {} 2>&1 & echo $!",
        env_file.display(),
        log.display()
    );
    let service = run_old_line(&line, cwd.path(), port, log);
    service.wait_healthy();
    let log = service.log();
    assert!(
        log.contains(&format!(
            "LEAFRESH_MODEL={}",
            dir.path().join("gguf/tiny.gguf").display()
        )),
        "{log}"
    );
    // exec: the pid `$!` gave is the service itself, so `kill $!` stops it as before.
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", service.pid)).unwrap();
    assert_eq!(comm.trim(), "leafresh-llm");
}

#[test]
fn reload_and_workers_are_explained_and_a_dotted_app_path_is_accepted() {
    let (dir, env_file) = old_app_dir("");
    let port = free_port();
    let log = dir.path().join("uvicorn.log");
    let line = format!(
        "uvicorn Text.LLM.main:app --host 127.0.0.1 --port {port} --env-file {} --reload \
         --workers 4 --log-level warning --proxy-headers --forwarded-allow-ips '*' \
         --timeout-keep-alive 30 > {} 2>&1 & echo $!",
        env_file.display(),
        log.display()
    );
    let service = run_old_line(&line, dir.path(), port, log);
    service.wait_healthy();
    let log = service.log();
    for needle in [
        "--reload: ignored: not needed",
        "--workers 4: ignored: one leafresh-llm process serves all requests",
        "--parallel",
        "--proxy-headers: ignored",
        "--forwarded-allow-ips *: ignored",
        "--timeout-keep-alive 30: ignored",
        "Text.LLM.main:app is served by leafresh-llm",
        "--log-level warn",
    ] {
        assert!(log.contains(needle), "lacks {needle}:\n{log}");
    }
}

/// Runs uvicorn-compat with a stand-in binary that prints what it was given.
fn translate(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let fake = cwd.join("fake-leafresh-llm");
    if !fake.exists() {
        std::fs::write(
            &fake,
            "#!/bin/sh\necho \"ARGS $*\"\necho \"MODEL $LEAFRESH_MODEL\"\n\
             echo \"HOST $LEAFRESH_HOST\"\necho \"PORT $LEAFRESH_PORT\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut command = Command::new(compat_dir().join("uvicorn"));
    command
        .args(args)
        .current_dir(cwd)
        .env("LEAFRESH_BIN", &fake);
    clear_settings_env(&mut command);
    command.envs(env.iter().copied());
    command.output().expect("run uvicorn-compat")
}

#[test]
fn uvicorn_compat_translates_the_old_settings() {
    let dir = scratch_dir();
    // The doubled-directory layout: the env file in Text/LLM names Text/LLM/gguf/..., a path
    // meant for the repository root.
    let app_dir = dir.path().join("Text/LLM");
    std::fs::create_dir_all(app_dir.join("gguf")).unwrap();
    std::fs::write(app_dir.join("gguf/m.gguf"), b"GGUF").unwrap();
    std::fs::write(
        app_dir.join(".env"),
        "export MODEL_PATH=\"Text/LLM/gguf/m.gguf\"\nHOST=0.0.0.0 # all\nPORT='9000'\n",
    )
    .unwrap();
    let model = app_dir.join("gguf/m.gguf").display().to_string();

    // Without --env-file, ./.env is read; HOST and PORT apply when not on the command line.
    let out = translate(&["main:app", "--log-level", "critical"], &app_dir, &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("ARGS --log-level error\n"), "{stdout}");
    assert!(stdout.contains(&format!("MODEL {model}\n")), "{stdout}");
    assert!(stdout.contains("HOST 0.0.0.0\nPORT 9000\n"), "{stdout}");
    assert!(
        text(&out.stderr).contains("found at"),
        "{}",
        text(&out.stderr)
    );

    // The command line wins over HOST/PORT; LEAFRESH_MODEL wins over MODEL_PATH; `--` passes on.
    let out = translate(
        &[
            "main:app",
            "--env-file=.env",
            "--port=8123",
            "--timeout-graceful-shutdown",
            "5",
            "--",
            "--parallel",
            "2",
        ],
        &app_dir,
        &[("LEAFRESH_MODEL", "/elsewhere.gguf")],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("ARGS --env-file .env --port 8123 --shutdown-timeout 5 --parallel 2\n"),
        "{stdout}"
    );
    assert!(stdout.contains("MODEL /elsewhere.gguf\n"), "{stdout}");
    assert!(stdout.contains("HOST 0.0.0.0\nPORT \n"), "{stdout}");

    // A Hugging Face model id is not a GGUF file: said, and left out.
    let out = translate(
        &["main:app"],
        dir.path(),
        &[("MODEL_NAME_OR_PATH", "mistralai/Mistral-7B-Instruct-v0.3")],
    );
    assert!(text(&out.stdout).contains("MODEL \n"));
    assert!(text(&out.stderr).contains("scripts/download-model"));

    // What cannot be carried over is refused with exit status 2 and the reason.
    for (args, needle) in [
        (&["main"][..], "<module>:<attribute>"),
        (&["main:app", "--ssl-keyfile", "k.pem"][..], "TLS"),
        (&["main:app", "--parallel", "2"][..], "go after --"),
        (
            &["main:app", "--env-file", "missing.env"][..],
            "no such file",
        ),
        (&[][..], "missing APP"),
    ] {
        let out = translate(args, dir.path(), &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stdout).is_empty(), "{args:?} started the binary");
    }
}

/// Removes every setting this machine's environment might hand the service (its own
/// `LEAFRESH_*` names, and the old app's names uvicorn-compat translates), so a test sees only
/// what it sets.
fn clear_settings_env(command: &mut Command) {
    for (name, _) in std::env::vars() {
        if name.starts_with("LEAFRESH_") && name != "LEAFRESH_BIN" {
            command.env_remove(name);
        }
    }
    for name in [
        "MODEL_PATH",
        "GGUF_MODEL_PATH",
        "MODEL_NAME_OR_PATH",
        "HOST",
        "PORT",
    ] {
        command.env_remove(name);
    }
}

/// The benchmark tools send other servers the prompt and the answer's JSON schema our base-info
/// endpoint uses (`tools/leafresh_tools`: the prompt's texts come from the same file, the answer
/// bounds are ported): for every budget and a request, Python's messages, bounds and schema
/// equal the service's own, and the tools' sampling is the endpoint's.
#[test]
fn the_benchmark_tools_build_the_same_prompt_schema_and_sampling_as_the_service() {
    use leafresh_llm::leafresh::categories;
    use leafresh_llm::leafresh::prompt::{answer_schema, base_info_messages, AnswerBounds};
    use leafresh_llm::leafresh::topic::ValidBaseInfo;
    let budgets: Vec<usize> = (100..=1100).step_by(7).collect();
    let script = format!(
        "import json, sys\nsys.path.insert(0, 'tools')\n\
         from leafresh_tools import answer, leafresh\n\
         budgets = {budgets:?}\n\
         print(json.dumps({{\n\
           'messages': leafresh.base_info_messages('바닷가 마을', '학생', '비건'),\n\
           'schemas': [answer.answer_schema(b) if b else None\n\
                       for b in map(answer.answer_bounds, budgets)],\n\
           'sampling': leafresh.base_info_sampling()}}, ensure_ascii=False))"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .current_dir(ROOT)
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let python: Value = serde_json::from_slice(&out.stdout).unwrap();

    let request = ValidBaseInfo {
        session_id: None,
        location: "바닷가 마을".into(),
        work_type: "학생".into(),
        category: categories::by_label("비건").unwrap(),
    };
    let messages: Vec<Value> = base_info_messages(&request)
        .iter()
        .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
        .collect();
    assert_eq!(python["messages"], json!(messages));
    for (budget, schema) in budgets.iter().zip(python["schemas"].as_array().unwrap()) {
        let ours = AnswerBounds::fitting(*budget).map(|b| answer_schema(&b));
        assert_eq!(schema, &ours.unwrap_or(Value::Null), "budget {budget}");
    }
    let defaults = leafresh_llm::leafresh::constants()
        .generation_defaults
        .base_info;
    let sampling = &python["sampling"];
    for (field, ours) in [
        ("temperature", f64::from(defaults.temperature)),
        ("top_p", f64::from(defaults.top_p)),
        ("top_k", f64::from(defaults.top_k)),
        ("repeat_penalty", f64::from(defaults.repeat_penalty)),
        ("min_p", f64::from(defaults.min_p)),
    ] {
        assert!(
            (sampling[field].as_f64().unwrap() - ours).abs() < 1e-6,
            "{field}: {sampling}"
        );
    }
}
