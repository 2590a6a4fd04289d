//! Faults (issue 7): clients that leave while their prompt is processed, clients that never
//! read, a burst of 50 streams on one slot, and 500 requests in a row: the service stays up,
//! frees what each request held, and its threads, descriptors and memory level off.
//! (SIGTERM mid-stream, an engine error in one sequence, an engine panic and a disconnect
//! mid-generation are in `scheduler` and `recommend`; bad model files in `startup`.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::hardening::{assert_no_leak, open_fds, rss_kib, status_field};
use crate::support::{
    client, encode, metric, slow_model, tiny_model, wait_for_metric, Service, SseReader,
};

const CHAT: &str = "/v1/chat/completions";

fn chat_body(content: &str, max_tokens: usize, stream: bool) -> Value {
    json!({"model": "tiny-llama", "stream": stream, "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": content}]})
}

fn threads_of(pid: u32) -> u64 {
    status_field(pid, "Threads:")
}

#[test]
fn a_client_that_leaves_during_prompt_processing_stops_it() {
    // A long prompt on the wider model, processed 32 tokens per step: seconds of prefill.
    let service = Service::start(
        &slow_model(),
        &[
            "--ctx-size",
            "4096",
            "--parallel",
            "1",
            "--batch-size",
            "32",
            "--sse-keepalive",
            "1",
        ],
    );
    let mut body = chat_body(&"환경 보호 ".repeat(780), 8, true);
    body["model"] = json!("slow-llama");
    let response = client().post(service.url(CHAT)).json(&body).send().unwrap();
    assert_eq!(response.status(), 200);
    let mut reader = SseReader::new(response);
    // The role chunk comes before the prompt is processed.
    let first = reader.next_event().expect("the role chunk");
    assert!(first.raw.contains("\"role\""), "{}", first.raw);
    let left = Instant::now();
    drop(reader);
    assert!(
        service.wait_for_log(
            "client left; generation stopped",
            1,
            Duration::from_secs(20)
        ),
        "{}",
        service.log()
    );
    let noticed = left.elapsed();
    // It stopped part-way through the prompt: `prefilled` < `prompt_tokens`, nothing generated.
    let line = service
        .log()
        .lines()
        .find(|l| l.contains("client left"))
        .unwrap()
        .to_string();
    let field = |name: &str| -> usize {
        line.split(&format!(" {name}="))
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    assert!(field("prefilled") < field("prompt_tokens"), "{line}");
    assert_eq!(field("generated"), 0, "{line}");
    assert!(wait_for_metric(
        &service,
        "leafresh_requests_active",
        0.0,
        Duration::from_secs(5)
    ));
    assert_eq!(
        metric(&service, "leafresh_generated_tokens_total"),
        0.0,
        "{}",
        service.log()
    );
    assert!(service.wait_for_log("outcome=\"cancelled\"", 1, Duration::from_secs(5)));
    // The slot is free again: a short request is served at once.
    let mut short = chat_body("안녕", 2, false);
    short["model"] = json!("slow-llama");
    let started = Instant::now();
    let response = client()
        .post(service.url(CHAT))
        .json(&short)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    eprintln!(
        "disconnect noticed after {noticed:?} ({line}); next request served in {:?}",
        started.elapsed()
    );
}

#[test]
fn a_client_that_never_reads_holds_nothing_the_others_need() {
    let service = Service::start(&tiny_model(), &["--parallel", "2", "--sse-keepalive", "1"]);
    // Streams that nobody reads: requests written, responses left in the socket.
    let mut silent = Vec::new();
    for i in 0..3 {
        let mut stream =
            TcpStream::connect(service.base_url().trim_start_matches("http://")).unwrap();
        let body = chat_body(&format!("읽지 않는 클라이언트 {i}"), 2000, true).to_string();
        write!(
            stream,
            "POST {CHAT} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        silent.push(stream);
    }
    // Meanwhile others are served, streamed to the end.
    for i in 0..4 {
        let response = client()
            .post(service.url(CHAT))
            .json(&chat_body(&format!("다른 요청 {i}"), 16, true))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().unwrap();
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    }
    // The unread generations end (they fit in the socket buffers or are cut at the stall
    // timeout) and free their slots.
    assert!(
        wait_for_metric(
            &service,
            "leafresh_requests_active",
            0.0,
            Duration::from_secs(60)
        ),
        "{}",
        service.log()
    );
    // Closing them without reading costs nothing either.
    drop(silent);
    let response = client()
        .post(service.url(CHAT))
        .json(&chat_body("마지막", 2, false))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[test]
fn fifty_streams_on_one_slot_get_503s_and_completions_without_growing_threads_or_fds() {
    let service = Service::start(&tiny_model(), &["--parallel", "1", "--queue-size", "8"]);
    // Warm up: the HTTP workers and the engine thread exist before the baseline is taken.
    for _ in 0..3 {
        let r = client()
            .post(service.url(CHAT))
            .json(&chat_body("안녕", 4, true))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().unwrap();
    }
    let pid = service.pid();
    let (threads_before, fds_before) = (threads_of(pid), open_fds(pid));
    let url = service.url(CHAT);
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let response = client()
                    .post(&url)
                    .json(&chat_body(&format!("동시 요청 {i}"), 32, true))
                    .send()
                    .unwrap();
                let status = response.status().as_u16();
                let retry_after = response.headers().get("retry-after").is_some();
                let text = response.text().unwrap();
                (status, retry_after, text)
            })
        })
        .collect();
    let results: Vec<(u16, bool, String)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    let served: Vec<_> = results.iter().filter(|r| r.0 == 200).collect();
    assert_eq!(
        refused.len() + served.len(),
        50,
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert!(!refused.is_empty() && !served.is_empty());
    for (_, retry_after, body) in &refused {
        assert!(*retry_after);
        assert_no_leak(body, "503");
        let error: Value = serde_json::from_str(body).unwrap();
        assert_eq!(error["error"]["code"], "overloaded", "{error}");
    }
    for (_, _, body) in &served {
        assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
        assert!(!body.contains("\"error\""), "{body}");
    }
    assert!(wait_for_metric(
        &service,
        "leafresh_requests_active",
        0.0,
        Duration::from_secs(10)
    ));
    assert!(wait_for_metric(
        &service,
        "leafresh_requests_queued",
        0.0,
        Duration::from_secs(10)
    ));
    // Closed connections are reaped shortly after; nothing per request stays behind.
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(pid) > fds_before + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (threads_after, fds_after) = (threads_of(pid), open_fds(pid));
    assert!(
        threads_after <= threads_before + 2,
        "threads {threads_before} -> {threads_after}"
    );
    assert!(
        fds_after <= fds_before + 2,
        "fds {fds_before} -> {fds_after}"
    );
    eprintln!(
        "50 streams on one slot: {} served, {} refused; threads {threads_before} -> {threads_after}, \
         fds {fds_before} -> {fds_after}",
        served.len(),
        refused.len()
    );
}

/// One soak request of either API; panics unless it succeeded completely.
fn soak_request(base: &str, i: usize) {
    let client = client();
    if i.is_multiple_of(10) {
        let url = format!(
            "{base}/ai/chatbot/recommendation/base-info?sessionId=soak-{i}&location={}&workType={}&category={}",
            encode("도시"),
            encode("사무직"),
            encode("비건")
        );
        let response = client.get(url).send().unwrap();
        assert_eq!(response.status(), 200, "request {i}");
        let mut reader = SseReader::new(response);
        let mut last = String::new();
        while let Some(event) = reader.next_event() {
            last = event.event;
        }
        assert_eq!(last, "close", "request {i}");
    } else {
        let stream = i.is_multiple_of(2);
        let response = client
            .post(format!("{base}{CHAT}"))
            .json(&chat_body(
                &format!("소크 테스트 {i} 번째 요청입니다"),
                24,
                stream,
            ))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "request {i}");
        let text = response.text().unwrap();
        if stream {
            assert!(
                text.trim_end().ends_with("data: [DONE]"),
                "request {i}: {text}"
            );
        }
    }
}

#[test]
fn soak_500_requests_memory_and_descriptors_level_off() {
    let service = Service::start(&tiny_model(), &["--parallel", "4", "--queue-size", "64"]);
    let pid = service.pid();
    let base = service.base_url();
    let mut samples = Vec::new();
    let mut sample = |done: usize| {
        samples.push((done, rss_kib(pid), open_fds(pid), threads_of(pid)));
    };
    sample(0);
    let started = Instant::now();
    // 250 sequential requests, then 250 from 8 concurrent clients.
    for i in 0..250 {
        soak_request(&base, i);
        if (i + 1) % 50 == 0 {
            sample(i + 1);
        }
    }
    for batch in 0..5 {
        let handles: Vec<_> = (0..8)
            .map(|worker| {
                let base = base.clone();
                std::thread::spawn(move || {
                    for j in 0..50 {
                        let i = 250 + batch * 50 + j;
                        if j % 8 == worker {
                            soak_request(&base, i);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        sample(250 + (batch + 1) * 50);
    }
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    sample(500);
    let report = samples
        .iter()
        .map(|(n, rss, fds, threads)| format!("{n}: rss {rss} KiB, fds {fds}, threads {threads}"))
        .collect::<Vec<_>>()
        .join("\n");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("soak.txt"),
        format!("500 requests in {elapsed:.1?}\n{report}\n"),
    )
    .unwrap();
    eprintln!("soak: 500 requests in {elapsed:.1?}\n{report}");
    // Level off: after the first 100 requests (warm-up: the prompt cache, allocator arenas),
    // memory grows by less than 24 MiB over the next 400, descriptors and threads not at all.
    let at = |n: usize| samples.iter().rev().find(|s| s.0 == n).copied().unwrap();
    let (warm, end) = (at(100), at(500));
    assert!(
        end.1 < warm.1 + 24 * 1024,
        "RSS {} KiB -> {} KiB\n{report}",
        warm.1,
        end.1
    );
    assert!(end.2 <= warm.2 + 2, "fds {} -> {}\n{report}", warm.2, end.2);
    assert!(
        end.3 <= warm.3 + 2,
        "threads {} -> {}\n{report}",
        warm.3,
        end.3
    );
    assert_eq!(metric(&service, "leafresh_requests_active"), 0.0);
    let mut line = Vec::new();
    let mut health = TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    write!(
        health,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    health.read_to_end(&mut line).unwrap();
    assert!(String::from_utf8_lossy(&line).starts_with("HTTP/1.1 200"));
}
