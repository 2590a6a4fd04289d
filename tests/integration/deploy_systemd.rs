//! The systemd deployment: the unit passes `systemd-analyze verify`, `scripts/install-systemd`
//! lays out the files, the settings template is accepted by the service, and the `Type=notify`
//! protocol (READY=1 only once the port accepts connections, STOPPING=1 on SIGTERM) against a
//! notify socket the test binds, as systemd would.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{binary, client, free_port, tiny_model, Service};

const UNIT: &str = "scripts/leafresh-llm.service";
const ENV_TEMPLATE: &str = "scripts/leafresh-llm.env";
const INSTALL: &str = "scripts/install-systemd";
/// The unit's ExecStart, as installed.
const EXEC_START: &str =
    "ExecStart=/usr/local/bin/leafresh-llm --env-file /etc/leafresh-llm/leafresh-llm.env";

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The value of `Key=` in the unit (the last one wins, as in systemd).
fn unit_setting(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .next_back()
        .map(str::to_owned)
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        analyze.is_ok(),
        "systemd-analyze is missing: apt-get install systemd (a prerequisite of this test)"
    );
    // verify checks that ExecStart's binary exists: point a copy of the unit at the built one.
    let unit = read(&repo_file(UNIT));
    assert_eq!(
        unit.lines().filter(|l| *l == EXEC_START).count(),
        1,
        "the unit must start the installed binary with the installed settings:\n{unit}"
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("leafresh-llm.service");
    std::fs::write(
        &copy,
        unit.replace(
            "ExecStart=/usr/local/bin/leafresh-llm ",
            &format!("ExecStart={} ", binary()),
        ),
    )
    .unwrap();

    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze");
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    // Warnings about other units of the machine are not ours; every line about this one is.
    let ours: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("leafresh-llm"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze verify:\n{report}");
}

#[test]
fn the_unit_waits_for_readiness_and_outlasts_the_shutdown_grace_period() {
    let unit = read(&repo_file(UNIT));
    assert_eq!(unit_setting(&unit, "Type").as_deref(), Some("notify"));
    assert_eq!(
        unit_setting(&unit, "KillSignal").as_deref(),
        Some("SIGTERM")
    );
    // The grace period running streams get on SIGTERM, as the binary documents its default.
    let help = Command::new(binary()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let grace: u64 = help
        .split("--shutdown-timeout")
        .nth(1)
        .and_then(|rest| rest.split("[default: ").nth(1))
        .and_then(|rest| rest.split(']').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no --shutdown-timeout default in --help:\n{help}"));
    let stop: u64 = unit_setting(&unit, "TimeoutStopSec")
        .and_then(|s| s.trim_end_matches('s').parse().ok())
        .expect("TimeoutStopSec in seconds");
    // Room for the final error events and the server's own stop after the grace period.
    assert!(
        stop >= grace + 10,
        "TimeoutStopSec={stop} would SIGKILL the service during its {grace} s grace period"
    );
    let start: u64 = unit_setting(&unit, "TimeoutStartSec")
        .and_then(|s| s.trim_end_matches('s').parse().ok())
        .expect("TimeoutStartSec in seconds");
    assert!(
        start >= 300,
        "TimeoutStartSec={start} is too short to load 4 GB from a slow disk"
    );
    assert!(unit_setting(&unit, "StartLimitBurst").is_some());
    assert!(unit_setting(&unit, "StartLimitIntervalSec").is_some());
}

#[test]
fn install_systemd_with_a_prefix_lays_out_the_files_and_keeps_existing_settings() {
    let root = tempfile::tempdir().unwrap();
    let install = |extra: &[&str]| {
        let output = Command::new(repo_file(INSTALL))
            .arg("--prefix")
            .arg(root.path())
            .arg("--no-start")
            .args(extra)
            .arg(binary())
            .output()
            .expect("run install-systemd");
        let report = text(&output);
        assert!(output.status.success(), "{report}");
        report
    };
    let report = install(&[]);
    // The parts that change the machine are skipped, and said so.
    for skipped in ["system user", "chown", "systemctl"] {
        assert!(
            report
                .lines()
                .any(|l| l.contains("skipped with --prefix") && l.contains(skipped)),
            "no notice that `{skipped}` was skipped:\n{report}"
        );
    }
    assert!(report.contains("journalctl -u leafresh-llm"), "{report}");

    let at = |path: &str| root.path().join(path.trim_start_matches('/'));
    let bin = at("/usr/local/bin/leafresh-llm");
    assert_eq!(mode(&bin), 0o755);
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(binary()).unwrap(),
        "installed binary differs from the built one"
    );
    let unit = at("/etc/systemd/system/leafresh-llm.service");
    assert_eq!(mode(&unit), 0o644);
    assert_eq!(read(&unit), read(&repo_file(UNIT)));
    let env = at("/etc/leafresh-llm/leafresh-llm.env");
    assert_eq!(mode(&env), 0o640, "the settings may hold an API key");
    assert_eq!(read(&env), read(&repo_file(ENV_TEMPLATE)));
    assert_eq!(mode(&at("/etc/leafresh-llm")), 0o750);
    // The model directory the unit names in ReadOnlyPaths= must exist, or the service fails
    // to start (status 226/NAMESPACE).
    let model_dir = unit_setting(&read(&unit), "ReadOnlyPaths").expect("ReadOnlyPaths");
    assert!(at(&model_dir).is_dir(), "{model_dir} not created");
    assert!(at("/var/lib/leafresh-llm").is_dir());

    // A second run (an upgrade) replaces binary and unit but keeps the administrator's settings.
    std::fs::write(&env, "LEAFRESH_PORT=9000\n").unwrap();
    let report = install(&[]);
    assert!(report.contains("keeping the existing"), "{report}");
    assert_eq!(read(&env), "LEAFRESH_PORT=9000\n");
    assert!(!at("/usr/local/bin/leafresh-llm.new").exists());

    // --dry-run changes nothing.
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(repo_file(INSTALL))
        .args(["--dry-run", "--prefix"])
        .arg(empty.path())
        .arg(binary())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("+ install"), "{}", text(&output));
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
}

/// The `LEAFRESH_*` names the binary's `--help` lists as environment twins.
fn documented_env_names() -> Vec<String> {
    let help = Command::new(binary()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    help.split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_setting_of_the_env_template_is_a_real_one_and_accepted_when_uncommented() {
    let template = read(&repo_file(ENV_TEMPLATE));
    let known = documented_env_names();
    assert!(known.iter().any(|n| n == "LEAFRESH_MODEL"), "{known:?}");
    // Every line `KEY=value` or `#KEY=value`, made active.
    let settings: Vec<&str> = template
        .lines()
        .map(|l| l.strip_prefix('#').unwrap_or(l))
        .filter(|l| l.starts_with("LEAFRESH_") && l.contains('='))
        .collect();
    for line in &settings {
        let name = line.split('=').next().unwrap();
        assert!(
            known.iter().any(|k| k == name),
            "{ENV_TEMPLATE}: {name} is not a setting of leafresh-llm (see --help)"
        );
    }
    for name in &known {
        assert!(
            settings.iter().any(|l| l.starts_with(&format!("{name}="))),
            "{ENV_TEMPLATE} does not mention {name}: add it (commented, with its default)"
        );
    }

    // The service starts with all of them active (the flags Service::start passes win over the
    // file, so model, host and port are the test's). mlock is left out: the tiny model would
    // still load, but the test machine's RLIMIT_MEMLOCK is not this test's subject. So is upstream
    // mode (LEAFRESH_UPSTREAM and its LEAFRESH_TOKENIZER), another way to run, which
    // tests/integration/upstream.rs starts, and the prompt cache directory, which would be made
    // under /var/lib on the test machine (tests/integration/prompt_cache.rs uses its own).
    let dir = tempfile::tempdir().unwrap();
    let active = dir.path().join("all.env");
    let body: Vec<&str> = settings
        .iter()
        .copied()
        .filter(|l| {
            ![
                "LEAFRESH_MLOCK=",
                "LEAFRESH_UPSTREAM=",
                "LEAFRESH_TOKENIZER=",
                "LEAFRESH_PROMPT_CACHE_DIR=",
            ]
            .iter()
            .any(|skipped| l.starts_with(skipped))
        })
        .collect();
    std::fs::write(&active, body.join("\n")).unwrap();
    let service = Service::start(&tiny_model(), &["--env-file", active.to_str().unwrap()]);
    let health = client().get(service.url("/health")).send().unwrap();
    assert!(health.status().is_success());
}

/// The service process, killed on drop; its log goes to a file.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("still running after {timeout:?}:\n{}", self.log());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary with `NOTIFY_SOCKET` set to `socket`, as systemd does for `Type=notify`.
fn start_notified(model: &Path, port: u16, socket: &Path, dir: &Path) -> Process {
    let log = dir.join("service.log");
    let child = Command::new(binary())
        .arg("--model")
        .arg(model)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--threads", "1"])
        .env("NOTIFY_SOCKET", socket)
        .env_remove("RUST_LOG")
        .env_remove("LEAFRESH_MODEL")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start leafresh-llm");
    Process { child, log }
}

/// The next notification's `KEY=VALUE` lines; `None` after `timeout` without one.
fn next_notification(socket: &UnixDatagram, timeout: Duration) -> Option<Vec<String>> {
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => Some(
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .map(str::to_owned)
                .collect(),
        ),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("notify socket: {e}"),
    }
}

/// Waits for a notification carrying `line`, returning every notification before it.
fn wait_for(
    socket: &UnixDatagram,
    line: &str,
    timeout: Duration,
    process: &Process,
) -> Vec<Vec<String>> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {line} within {timeout:?} (got {seen:?}):\n{}",
            process.log()
        );
        if let Some(message) = next_notification(socket, left.min(Duration::from_millis(200))) {
            let done = message.iter().any(|l| l == line);
            seen.push(message);
            if done {
                return seen;
            }
        }
    }
}

#[test]
fn ready_is_sent_only_once_the_port_accepts_connections_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let port = free_port();
    let mut service = start_notified(&tiny_model(), port, &socket_path, dir.path());

    let before = wait_for(&socket, "READY=1", Duration::from_secs(60), &service);
    // The moment systemd hears READY=1 it starts the units ordered after this one: the port
    // must accept connections by then, and the health check must pass.
    TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| {
        panic!(
            "READY=1 arrived but port {port} refuses connections: {e}\n{}",
            service.log()
        )
    });
    let health = client()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .unwrap();
    assert!(health.status().is_success());
    assert!(
        !before.iter().flatten().any(|l| l == "STOPPING=1"),
        "{before:?}"
    );

    let kill = Command::new("kill")
        .args(["-TERM", &service.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    wait_for(&socket, "STOPPING=1", Duration::from_secs(10), &service);
    assert_eq!(
        service.wait_exit(Duration::from_secs(40)),
        Some(0),
        "{}",
        service.log()
    );
}

#[test]
fn ready_is_never_sent_when_the_model_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let broken = dir.path().join("broken.gguf");
    std::fs::write(&broken, b"GGUF").unwrap();
    let mut service = start_notified(&broken, free_port(), &socket_path, dir.path());

    // systemd counts an exit before READY=1 as a failed start (and Restart= retries it).
    let code = service.wait_exit(Duration::from_secs(30));
    assert_ne!(code, Some(0), "{}", service.log());
    let mut messages = Vec::new();
    while let Some(message) = next_notification(&socket, Duration::from_millis(100)) {
        messages.push(message);
    }
    assert!(
        !messages.iter().flatten().any(|l| l == "READY=1"),
        "READY=1 sent although the model failed to load: {messages:?}"
    );
}
