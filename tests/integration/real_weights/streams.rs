//! The Leafresh endpoints on real weights: readable Korean fragments and a parsed `close` with
//! three challenges, several streams at once, a client that leaves, the prompt cache across a
//! restart.

use std::time::Duration;

use serde_json::json;

use super::{assert_readable, has_hangul, shared_prompt_prefix, start};
use crate::recommend::{assert_recommendation_stream, base_info_url, free_text_url};
use crate::support::{
    client, get_events, leave_and_assert_the_request_ends, logged_field, real_model, SseReader,
    REAL_MODEL_TEMPLATE,
};

/// The contract's stream shape, and text a person can read: every fragment and the answer
/// without broken characters. Returns the fragments.
fn assert_readable_recommendation(events: &[crate::support::SseEvent], category: &str) -> String {
    let close = assert_recommendation_stream(events, category);
    let fragments: String = events[..events.len() - 1]
        .iter()
        .map(|e| e.json()["data"].as_str().unwrap().to_owned())
        .collect();
    assert_readable(&fragments);
    assert_readable(&close.to_string());
    fragments
}

#[test]
fn base_info_and_free_text_stream_readable_korean_and_close_with_three_challenges() {
    let service = start(&[]);
    let requests = [
        ("도시", "사무직", "디지털 탄소", "DIGITAL_CARBON"),
        ("바닷가 마을", "학생", "플로깅", "PLOGGING"),
        ("농촌", "자영업", "비건", "VEGAN"),
    ];
    let mut all = String::new();
    for (i, (location, work, category, code)) in requests.into_iter().enumerate() {
        let session = format!("real-stream-{i}");
        let (status, _, events) =
            get_events(&base_info_url(&service, &session, location, work, category));
        assert_eq!(status, 200);
        all.push_str(&assert_readable_recommendation(&events, code));
        // The follow-up keeps the session's category.
        let message = ["텀블러 쓰는 챌린지 추천해줘", "더 쉬운 챌린지로 부탁해"][i % 2];
        let (status, _, events) = get_events(&free_text_url(&service, &session, message));
        assert_eq!(status, 200);
        all.push_str(&assert_readable_recommendation(&events, code));
    }
    // A 270M base model writes some answers in English whatever it is asked; Korean, and the
    // UTF-8 assembly of its syllables, must be there.
    assert!(has_hangul(&all), "no Korean in six answers: {all:?}");
}

#[test]
fn several_streams_at_once_each_close_with_their_own_category() {
    let service = start(&["--parallel", "4"]);
    let requests = [
        ("도시", "사무직", "플로깅", "PLOGGING"),
        ("농촌", "학생", "비건", "VEGAN"),
        ("산간 지역", "농업", "에너지 절약", "ENERGY_SAVING"),
        ("대학가", "프리랜서", "업사이클", "UPCYCLING"),
    ];
    std::thread::scope(|scope| {
        let handles: Vec<_> = requests
            .iter()
            .enumerate()
            .map(|(i, (location, work, category, code))| {
                let url = base_info_url(
                    &service,
                    &format!("real-many-{i}"),
                    location,
                    work,
                    category,
                );
                scope.spawn(move || {
                    let (_, _, events) = get_events(&url);
                    assert_readable_recommendation(&events, code);
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
    });
    // They ran together: a later request found the first ones running. (A request's log line
    // comes as its stream ends, maybe just after the client read `close`.)
    service.wait_for_log(
        "endpoint=\"base-info\"",
        4,
        std::time::Duration::from_secs(10),
    );
    // A request that waited for a slot waited for another's whole generation; one admitted at
    // once waited at most for the decode step under way (a prefill, slow on a loaded machine).
    // So the bound is relative: every wait shorter than half the shortest generation.
    let log = service.log();
    let queued = logged_field(&log, "base-info", "queue_ms");
    let totals = logged_field(&log, "base-info", "total_ms");
    assert_eq!(queued.len(), 4, "{log}");
    let shortest_generation = (queued.iter().zip(&totals))
        .map(|(queue, total)| total.saturating_sub(*queue))
        .min()
        .unwrap();
    assert!(
        queued.iter().all(|&ms| ms < shortest_generation / 2),
        "none waited for a slot: queued {queued:?} ms, total {totals:?} ms"
    );
}

#[test]
fn a_client_that_leaves_frees_its_slot_at_once() {
    let service = start(&[]);
    let body = json!({
        "model": super::model_id(&service), "stream": true, "max_tokens": 2000,
        "messages": [{"role": "user", "content": "지구 온난화에 대해 아주 길게 설명해 줘."}]
    });
    let response = client()
        .post(service.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .unwrap();
    let mut reader = SseReader::new(response);
    for _ in 0..3 {
        assert!(reader.next_event().is_some());
    }
    leave_and_assert_the_request_ends(&service, reader);
}

#[test]
fn the_prompt_cache_dir_serves_the_instruction_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("prompt-cache");
    let args = ["--prompt-cache-dir", cache.to_str().unwrap()];
    let first = start(&args);
    first.assert_logged("prompt prefix saved");
    drop(first);
    let second = start(&args);
    second.assert_logged("instruction prefix loaded from the prompt cache");
    let (_, _, events) = get_events(&base_info_url(
        &second,
        "real-cache",
        "바닷가",
        "학생",
        "플로깅",
    ));
    assert_readable_recommendation(&events, "PLOGGING");
    assert!(second.wait_for_log("request finished", 1, Duration::from_secs(5)));
    let cached = logged_field(&second.log(), "base-info", "cached_tokens")[0];
    let shared = shared_prompt_prefix(&real_model(), Some(REAL_MODEL_TEMPLATE[1]));
    assert!(
        cached >= shared,
        "the first base-info after the restart found {cached} tokens cached; every base-info \
         prompt shares {shared}"
    );
}

/// The answers are the model's own: no value copies the instruction's words or an old
/// placeholder (the grammar refuses them), over many base-info requests; how many answers give
/// three distinct titles is printed (a model's quality, not a guarantee).
#[test]
fn base_info_answers_never_copy_the_instructions_words() {
    let service = start(&[]);
    let copies: Vec<&str> = ["챌린지 제목", "실천 방법", "추천하는 이유를 담은 한 문장"].to_vec();
    let locations = ["도시", "농촌", "바닷가 마을", "산간 지역"];
    let works = ["사무직", "학생", "자영업"];
    let (mut answers, mut distinct) = (0, 0);
    for (i, category) in [
        "제로웨이스트",
        "플로깅",
        "비건",
        "에너지 절약",
        "업사이클",
        "디지털 탄소",
    ]
    .iter()
    .enumerate()
    {
        let url = base_info_url(
            &service,
            &format!("copies-{i}"),
            locations[i % locations.len()],
            works[i % works.len()],
            category,
        );
        let (status, _, events) = get_events(&url);
        assert_eq!(status, 200);
        let close = events.last().unwrap().json();
        let answer = &close["data"];
        let text = answer.to_string();
        for copy in &copies {
            assert!(!text.contains(copy), "copied {copy:?}: {answer}");
        }
        let titles: std::collections::HashSet<&str> = answer["challenges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["title"].as_str().unwrap())
            .collect();
        answers += 1;
        distinct += usize::from(titles.len() == 3);
    }
    eprintln!("{distinct} of {answers} answers have three distinct titles");
}
