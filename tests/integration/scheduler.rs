//! The scheduler through the real service: concurrent streams, overload, cancellation, the
//! prompt cache, keep-alive, graceful stop and a dead engine.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{
    client, encode, get_events, leave_and_assert_the_request_ends, logged_field, metric,
    slow_model, tiny_model, wait_for_metric, Service, SseReader,
};

fn base_info_url(service: &Service, location: &str, work_type: &str, category: &str) -> String {
    service.url(&format!(
        "/ai/chatbot/recommendation/base-info?location={}&workType={}&category={}",
        encode(location),
        encode(work_type),
        encode(category)
    ))
}

/// The value of an unlabelled metric (or a labelled one, given with its labels).
#[test]
fn several_concurrent_streams_all_complete_with_their_own_answers() {
    let service = Service::start(&tiny_model(), &["--parallel", "4"]);
    let requests = [
        ("도시", "사무직", "플로깅", "PLOGGING"),
        ("농촌", "학생", "비건", "VEGAN"),
        ("바닷가", "자영업", "업사이클", "UPCYCLING"),
        ("산간", "주부", "에너지 절약", "ENERGY_SAVING"),
    ];
    let handles: Vec<_> = requests
        .iter()
        .map(|(location, work, category, code)| {
            let url = base_info_url(&service, location, work, category);
            let code = code.to_string();
            std::thread::spawn(move || {
                let (status, _, events) = get_events(&url);
                assert_eq!(status, 200);
                let close = events.last().expect("events").json();
                assert_eq!(events.last().unwrap().event, "close", "{close}");
                for challenge in close["data"]["challenges"].as_array().unwrap() {
                    assert_eq!(challenge["category"], code.as_str());
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("stream completed");
    }
    assert_eq!(
        metric(
            &service,
            "leafresh_requests_total{endpoint=\"base-info\",outcome=\"ok\"}"
        ),
        4.0
    );
    assert!(metric(&service, "leafresh_generated_tokens_total") > 0.0);
}

#[test]
fn overload_answers_503_with_retry_after_while_accepted_requests_complete() {
    let service = Service::start(&tiny_model(), &["--parallel", "1", "--queue-size", "1"]);
    let url = base_info_url(&service, "도시", "사무직", "비건");
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let response = client().get(&url).send().unwrap();
                let status = response.status().as_u16();
                if status == 503 {
                    let retry_after = response.headers()["retry-after"]
                        .to_str()
                        .unwrap()
                        .to_owned();
                    let body: Value = response.json().unwrap();
                    assert_eq!(body["status"], 503);
                    assert_eq!(body["data"], Value::Null);
                    assert!(retry_after.parse::<u32>().unwrap() > 0);
                    return (503, String::new());
                }
                let mut reader = SseReader::new(response);
                let mut last = String::new();
                while let Some(event) = reader.next_event() {
                    last = event.event;
                }
                (status, last)
            })
        })
        .collect();
    let results: Vec<(u16, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let refused = results.iter().filter(|(s, _)| *s == 503).count();
    let accepted: Vec<_> = results.iter().filter(|(s, _)| *s == 200).collect();
    assert!(refused >= 1, "{results:?}");
    assert!(!accepted.is_empty(), "{results:?}");
    assert_eq!(refused + accepted.len(), 6, "{results:?}");
    for (_, last) in accepted {
        assert_eq!(last, "close", "{results:?}");
    }
}

#[test]
fn after_a_client_disconnects_the_active_gauge_is_zero_within_two_seconds() {
    let service = Service::start(&slow_model(), &["--no-grammar"]);
    let response = client()
        .get(base_info_url(&service, "도시", "사무직", "비건"))
        .send()
        .unwrap();
    let mut reader = SseReader::new(response);
    assert_eq!(reader.next_event().unwrap().event, "challenge");
    leave_and_assert_the_request_ends(&service, reader);
}

#[test]
fn a_second_base_info_reuses_the_cached_instruction_prefix() {
    // Without the warm-up, so that the first request computes the instruction.
    let service = Service::start(&tiny_model(), &["--parallel", "2", "--no-warm-up"]);
    let (_, _, events) = get_events(&base_info_url(&service, "도시", "사무직", "비건"));
    assert_eq!(events.last().unwrap().event, "close");
    let cached_before = metric(&service, "leafresh_prompt_tokens_cached_total");
    let (_, _, events) = get_events(&base_info_url(&service, "농촌 마을", "농업", "플로깅"));
    assert_eq!(events.last().unwrap().event, "close");
    let cached = metric(&service, "leafresh_prompt_tokens_cached_total") - cached_before;
    let instruction = crate::support::instruction_tokens() as f64;
    assert!(
        cached >= instruction,
        "cached {cached} tokens, the shared instruction is {instruction}"
    );
    assert!(service.wait_for_log("request finished", 2, Duration::from_secs(5)));
    let logged = logged_field(&service.log(), "base-info", "cached_tokens");
    assert_eq!(logged[0], 0, "the first request had nothing cached");
    assert_eq!(logged[1] as f64, cached);
}

#[test]
fn each_free_text_turn_reuses_the_whole_previous_turn_its_answer_included() {
    let service = Service::start(&tiny_model(), &["--parallel", "2"]);
    let url = |message: &str| {
        service.url(&format!(
            "/ai/chatbot/recommendation/free-text?sessionId=cache-turns&message={}",
            encode(message)
        ))
    };
    get_events(&url("텀블러 쓰는 환경 챌린지 추천해줘"));
    get_events(&url("조금 더 쉬운 환경 챌린지로 부탁해"));
    get_events(&url("하나만 더 추천해줘"));
    assert!(service.wait_for_log("request finished", 3, Duration::from_secs(5)));
    let log = service.log();
    let prompts = logged_field(&log, "free-text", "prompt_tokens");
    let completions = logged_field(&log, "free-text", "completion_tokens");
    let cached = logged_field(&log, "free-text", "cached_tokens");
    // Turn N+1 begins with turn N's prompt and the answer's tokens as they were generated (not
    // the template's re-rendering of the answer), which its slot still holds.
    for turn in 1..3 {
        assert!(
            cached[turn] + 2 >= prompts[turn - 1] + completions[turn - 1],
            "turn {turn}: prompts {prompts:?}, completions {completions:?}, cached {cached:?}"
        );
    }
}

#[test]
fn quiet_streams_get_keep_alive_comment_frames() {
    let service = Service::start(
        &slow_model(),
        &["--sse-keepalive", "1", "--parallel", "1", "--no-grammar"],
    );
    // A queued request is quiet until the first finishes: it must still see comment frames.
    let first = client()
        .get(base_info_url(&service, "도시", "사무직", "비건"))
        .send()
        .unwrap();
    let second = client()
        .get(base_info_url(&service, "농촌", "학생", "비건"))
        .send()
        .unwrap();
    let mut lines = BufReader::new(second).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut saw_comment = false;
    while Instant::now() < deadline {
        match lines.next() {
            Some(Ok(line)) if line.starts_with(':') => {
                saw_comment = true;
                break;
            }
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    drop(first);
    assert!(saw_comment, "no keep-alive comment frame");
}

#[test]
fn sigterm_ends_running_streams_with_an_error_event_and_exits_zero() {
    let mut service = Service::start(&slow_model(), &["--shutdown-timeout", "1", "--no-grammar"]);
    let response = client()
        .get(base_info_url(&service, "도시", "사무직", "비건"))
        .send()
        .unwrap();
    let mut reader = SseReader::new(response);
    assert_eq!(reader.next_event().unwrap().event, "challenge");
    service.terminate();
    let mut last = None;
    while let Some(event) = reader.next_event() {
        last = Some(event);
    }
    let last = last.expect("a final event");
    assert_eq!(last.event, "error", "{last:?}");
    assert_eq!(last.json()["status"], 503);
    let code = service
        .wait_exit(Duration::from_secs(10))
        .expect("the service exits");
    assert_eq!(code, Some(0), "{}", service.log());
}

#[test]
#[cfg(feature = "fault-injection")]
fn an_engine_panic_fails_the_stream_and_exits_non_zero() {
    let mut service = Service::start(&tiny_model(), &["--debug-panic-at-step", "3"]);
    let (status, _, events) = get_events(&base_info_url(&service, "도시", "사무직", "비건"));
    assert_eq!(status, 200);
    let last = events.last().expect("a final event");
    assert_eq!(last.event, "error", "{events:?}");
    assert_eq!(last.json()["status"], 503);
    let code = service
        .wait_exit(Duration::from_secs(10))
        .expect("the service exits");
    assert_ne!(code, Some(0));
    service.assert_logged("panicked");
}

#[test]
fn a_queued_request_whose_client_left_is_dropped_without_decoding() {
    // A queued stream is silent; the keep-alive frames are the writes that reveal a gone client.
    let service = Service::start(
        &slow_model(),
        &["--parallel", "1", "--no-grammar", "--sse-keepalive", "1"],
    );
    let running = client()
        .get(base_info_url(&service, "도시", "사무직", "비건"))
        .send()
        .unwrap();
    let mut running = SseReader::new(running);
    assert_eq!(running.next_event().unwrap().event, "challenge");
    let queued = client()
        .get(base_info_url(&service, "농촌", "학생", "비건"))
        .send()
        .unwrap();
    assert!(wait_for_metric(
        &service,
        "leafresh_requests_queued",
        1.0,
        Duration::from_secs(5)
    ));
    drop(queued);
    assert!(wait_for_metric(
        &service,
        "leafresh_requests_queued",
        0.0,
        Duration::from_secs(10)
    ));
    drop(running);
    assert!(wait_for_metric(
        &service,
        "leafresh_requests_active",
        0.0,
        Duration::from_secs(5)
    ));
    // Only the running request was ever admitted (and stopped); the queued one never decoded.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(metric(&service, "leafresh_requests_active"), 0.0);
    assert_eq!(
        service.log().matches("client left").count(),
        1,
        "{}",
        service.log()
    );
    assert!(service.wait_for_log("outcome=\"cancelled\"", 2, Duration::from_secs(5)));
    assert!(!service.log().contains(" finish="), "{}", service.log());
}

#[test]
#[cfg(feature = "fault-injection")]
fn a_sequence_that_fails_to_decode_does_not_take_the_others_down() {
    // What this proves: when a decode step that carries two generating sequences fails, the
    // batch is taken back and each sequence is decoded alone, so only the one that fails on its
    // own ends with an error and the other streams on to a valid `close`. The hook fires at the
    // first step where both sequences generate, so the failing batch certainly holds both. The
    // failure is an out-of-vocabulary token, which llama.cpp refuses while validating the batch,
    // before any compute: a fault inside compute cannot be provoked in a real engine here.
    let service = Service::start(
        &tiny_model(),
        &["--parallel", "2", "--debug-corrupt-token-when-batched"],
    );
    let urls = [
        base_info_url(&service, "도시", "사무직", "비건"),
        base_info_url(&service, "농촌", "학생", "플로깅"),
    ];
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let handles: Vec<_> = urls
        .into_iter()
        .map(|url| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let (_, _, events) = get_events(&url);
                events.last().expect("a final event").event.clone()
            })
        })
        .collect();
    let mut finals: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    finals.sort();
    assert_eq!(finals, ["close", "error"], "{}", service.log());
    let retried = service
        .log()
        .lines()
        .filter(|l| l.contains("retrying sequence by sequence"))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert_eq!(retried.len(), 1, "{}", service.log());
    assert!(retried[0].contains("sequences=2"), "{}", retried[0]);
    // The service still serves.
    let (_, _, events) = get_events(&base_info_url(&service, "바닷가", "어부", "비건"));
    assert_eq!(events.last().unwrap().event, "close");
}

/// The threads of a process named `name` (their ids).
fn threads_named(pid: u32, name: &str) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| {
            let task = task.ok()?.path();
            let comm = std::fs::read_to_string(task.join("comm")).ok()?;
            (comm.trim() == name).then(|| task.file_name().unwrap().to_string_lossy().into_owned())
        })
        .collect()
}

/// With `--step-overlap` one helper thread does every step's host work for as long as the engine
/// lives: the same thread after two requests, none started per step.
#[test]
fn the_step_overlap_helper_is_one_thread_for_the_engines_life() {
    let service = Service::start(&tiny_model(), &["--step-overlap", "on"]);
    let mut seen = Vec::new();
    for round in 0..2 {
        let body = json!({"model": "tiny-llama", "max_tokens": 24, "stream": true,
                          "messages": [{"role": "user", "content": format!("안녕 {round}")}]});
        let response = client()
            .post(service.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .unwrap();
        let mut reader = SseReader::new(response);
        while reader.next_event().is_some() {}
        seen.push(threads_named(service.pid(), "llama-step-host"));
    }
    assert_eq!(seen[0].len(), 1, "{seen:?}");
    assert_eq!(seen[0], seen[1], "the same helper thread");
}

/// A client that reads nothing until its whole answer is generated still gets every piece and the
/// final chunk: the engine never drops a live client's events, whatever their number.
#[test]
fn a_client_that_reads_late_gets_every_event_and_the_final_one() {
    let service = Service::start(&tiny_model(), &[]);
    let body = json!({"model": "tiny-llama", "max_tokens": 1500, "stream": true,
                      "logit_bias": {"2": -100},
                      "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "길게 써 주세요"}]});
    let response = client()
        .post(service.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .unwrap();
    // The whole answer is generated before the first read: no request queued or running.
    std::thread::sleep(Duration::from_millis(200));
    let idle = |name: &str| wait_for_metric(&service, name, 0.0, Duration::from_secs(60));
    assert!(idle("leafresh_requests_queued") && idle("leafresh_requests_active"));
    let mut reader = SseReader::new(response);
    let mut data = Vec::new();
    while let Some(event) = reader.next_event() {
        data.push(event.raw);
    }
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 1500, "{usage}");
    let text: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(text.chars().count() > 100, "{}", text.len());
}
