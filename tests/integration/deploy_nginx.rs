//! The nginx example of deploy/nginx: the real nginx (Debian's) in front of two real instances
//! on loopback ports, with the example config rendered for them. A session's turns land on one
//! instance (which then has its history); different sessions spread over both.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    client, encode, free_port, get_events, logged_prompt_tokens, tiny_model, Service,
};

/// An example config, and what the test replaces in it: its two instances and its listen line
/// (by `test_listen`, where `PORT` becomes the test's port).
struct Example {
    path: &'static str,
    instances: [&'static str; 2],
    listen: &'static str,
    test_listen: &'static str,
}

const EXAMPLE: Example = Example {
    path: "deploy/nginx/leafresh-llm.conf",
    instances: ["10.0.0.11:8000", "10.0.0.12:8000"],
    listen: "listen 80 default_server;",
    test_listen: "listen 127.0.0.1:PORT default_server;",
};

/// The engine fleet behind a gateway in upstream mode.
const FLEET: Example = Example {
    path: "deploy/nginx/engine-fleet.conf",
    instances: ["10.0.0.21:8000", "10.0.0.22:8000"],
    listen: "listen 8080;",
    test_listen: "listen 127.0.0.1:PORT;",
};

/// nginx on PATH, or where Debian puts it (`/usr/sbin` is not on every user's PATH).
fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nginx"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()))
        .expect("nginx is missing: apt-get install nginx (a prerequisite of this test)")
}

/// nginx in the foreground with everything (config, logs, pid, temp files) in its own
/// directory; stopped on drop.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    /// Renders `example` for `instances` and starts nginx; waits until it accepts connections.
    fn start(example: &Example, instances: [&Service; 2]) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let path = example.path;
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
            .expect("read the nginx example");
        let listen = example.test_listen.replace("PORT", &port.to_string());
        let mut site = text.replace(example.listen, &listen);
        assert_ne!(site, text, "{path} no longer has `{}`", example.listen);
        for (placeholder, service) in example.instances.iter().zip(instances) {
            assert!(
                site.contains(placeholder),
                "{path} no longer names {placeholder}"
            );
            let address = service.base_url().trim_start_matches("http://").to_owned();
            site = site.replace(placeholder, &address);
        }
        std::fs::write(dir.path().join("leafresh-llm.conf"), site).unwrap();

        let d = dir.path().display();
        let main = format!(
            "worker_processes 1;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             \x20   access_log {d}/access.log;\n\
             \x20   client_body_temp_path {d}/client_body;\n\
             \x20   proxy_temp_path {d}/proxy;\n\
             \x20   fastcgi_temp_path {d}/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/uwsgi;\n\
             \x20   scgi_temp_path {d}/scgi;\n\
             \x20   include {d}/leafresh-llm.conf;\n\
             }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), main).unwrap();

        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-g")
            .arg(format!("daemon off; pid {d}/nginx.pid;"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx { child, dir, port };
        nginx.wait_listening();
        nginx
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nginx exited ({status}):\n{}", self.error_log());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nginx not listening:\n{}", self.error_log());
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path_and_query)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers (a killed master would leave them running).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `leafresh_requests_total{endpoint="ENDPOINT",outcome="ok"}` of one instance.
fn answered(service: &Service, endpoint: &str) -> u64 {
    let metrics = client()
        .get(service.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let line = format!(r#"leafresh_requests_total{{endpoint="{endpoint}",outcome="ok"}} "#);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or(0)
}

/// One free-text turn through nginx; asserts it streamed to its `close` event.
fn free_text_turn(nginx: &Nginx, session: &str, message: &str) {
    let (status, headers, events) = get_events(&nginx.url(&format!(
        "/ai/chatbot/recommendation/free-text?sessionId={}&message={}",
        encode(session),
        encode(message)
    )));
    assert_eq!(status, 200, "{events:?}\n{}", nginx.error_log());
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"),
        "{headers:?}"
    );
    let last = events.last().expect("events");
    assert_eq!(last.event, "close", "{events:?}");
}

#[test]
fn the_nginx_example_keeps_each_session_on_one_instance() {
    let instances = [
        Service::start(&tiny_model(), &[]),
        Service::start(&tiny_model(), &[]),
    ];
    let nginx = Nginx::start(&EXAMPLE, [&instances[0], &instances[1]]);
    let counts = || instances.each_ref().map(|i| answered(i, "free-text"));
    assert_eq!(counts(), [0, 0]);

    // Two turns of one session: both on the same instance, which had the first turn in the
    // prompt of the second.
    free_text_turn(&nginx, "nginx-session", "텀블러 쓰는 환경 챌린지 추천해줘");
    free_text_turn(&nginx, "nginx-session", "하나 더 쉬운 환경 챌린지 추천해줘");
    let after_session = counts();
    assert!(
        after_session == [2, 0] || after_session == [0, 2],
        "the session's turns were split over the instances: {after_session:?}"
    );
    let pinned = &instances[if after_session[0] == 2 { 0 } else { 1 }];
    let prompts = logged_prompt_tokens(&pinned.log(), "free-text");
    assert_eq!(prompts.len(), 2, "{}", pinned.log());
    assert!(
        prompts[1] > prompts[0],
        "the second turn did not see the first: prompt tokens {prompts:?}"
    );

    // Different sessions spread over both instances. The hash depends on the instances'
    // addresses (random ports here): with 16 sessions both get some unless the hash is broken
    // (chance of all on one side at an even split: 2 in 65536).
    for n in 0..16 {
        free_text_turn(
            &nginx,
            &format!("spread-{n}"),
            "분리수거 환경 챌린지 추천해줘",
        );
    }
    let after_spread = counts();
    let new = [
        after_spread[0] - after_session[0],
        after_spread[1] - after_session[1],
    ];
    assert_eq!(new[0] + new[1], 16);
    assert!(
        new[0] > 0 && new[1] > 0,
        "16 sessions all landed on one instance: {new:?}"
    );

    // Metrics are per instance: not served through the balancer.
    let metrics = client().get(nginx.url("/metrics")).send().unwrap();
    assert_eq!(metrics.status(), 404);
    // Everything else reaches some instance.
    let health = client().get(nginx.url("/health")).send().unwrap();
    assert!(health.status().is_success());
}

#[test]
fn the_engine_fleet_example_keeps_a_conversation_on_one_engine_behind_a_gateway() {
    // Two engines (instances of this service on the tiny model), nginx with the fleet example
    // in front of them, and a gateway in upstream mode in front of nginx.
    let engines = [
        Service::start(&tiny_model(), &[]),
        Service::start(&tiny_model(), &[]),
    ];
    let nginx = Nginx::start(&FLEET, [&engines[0], &engines[1]]);
    let mut gateway = Service::gateway(&nginx.url("/v1"), &[]);
    assert!(
        gateway.wait_health(200, Duration::from_secs(20)),
        "{}",
        gateway.log()
    );
    let counts = || engines.each_ref().map(|e| answered(e, "chat-completions"));

    // A conversation's turns reach one engine (X-Session-Id), which sees the first turn again in
    // the second's prompt.
    let turn = |session: &str, message: &str| {
        let (status, _, events) = get_events(&gateway.url(&format!(
            "/ai/chatbot/recommendation/free-text?sessionId={}&message={}",
            encode(session),
            encode(message)
        )));
        assert_eq!(status, 200);
        assert_eq!(events.last().unwrap().event, "close", "{events:?}");
    };
    turn("fleet-session", "텀블러 쓰는 환경 챌린지 추천해줘");
    turn("fleet-session", "하나 더 쉬운 환경 챌린지 추천해줘");
    let after_session = counts();
    assert!(
        after_session == [2, 0] || after_session == [0, 2],
        "the conversation was split over the engines: {after_session:?}"
    );

    // Conversations spread over both (chance of 16 on one side at an even split: 2 in 65536).
    for n in 0..16 {
        turn(&format!("fleet-{n}"), "분리수거 환경 챌린지 추천해줘");
    }
    let after = counts();
    let new = [after[0] - after_session[0], after[1] - after_session[1]];
    assert_eq!(new[0] + new[1], 16);
    assert!(new[0] > 0 && new[1] > 0, "all on one engine: {new:?}");
}
