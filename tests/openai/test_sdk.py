"""The OpenAI-compatible API (`/v1/models`, `/v1/chat/completions`) driven by the official `openai`
Python package, the client OpenWebUI, LangChain and most scripts use.

The servers are started by `tests/integration/openai_sdk.rs` (`cargo test --release --test
integration openai_sdk`), which passes their addresses in the environment:

- LEAFRESH_BASE_URL            a server without an API key
- LEAFRESH_AUTH_BASE_URL       a server started with `--api-key LEAFRESH_API_KEY`
- LEAFRESH_API_KEY             that key
- LEAFRESH_SMALL_CTX_BASE_URL  a server with a small context (`--ctx-size 512 --parallel 1`)
- LEAFRESH_MODEL_ALIAS         the `--model-alias` all three were given (default "leafresh")
- LEAFRESH_MODEL_ID            the model file's stem, optional
- LEAFRESH_TOOL_CALLS_TOKEN    the id of the model's `[TOOL_CALLS]` token (for `logit_bias`)

Run by hand against servers you started yourself: `LEAFRESH_BASE_URL=http://127.0.0.1:8000
python3 -m pytest -q tests/openai` (tests whose server is not given are skipped; the Rust glue
refuses skips).

The model is a tiny llama with random weights: its text is gibberish, so the tests check what a
client relies on (shapes, counts, timing, determinism, grammar, errors), never what it says.
"""

import json
import os
import time
import urllib.error
import urllib.request

import jsonschema
import openai
import pytest
from openai import OpenAI

ALIAS = os.environ.get("LEAFRESH_MODEL_ALIAS", "leafresh")
# Greedy decoding: the same request always gives the same answer.
GREEDY = {"temperature": 0, "seed": 7}
QUESTION = "오늘 사무실에서 할 수 있는 친환경 챌린지를 하나 추천해 줘."


def _env(name):
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.skip(f"{name} is not set (tests/integration/openai_sdk.rs sets it)")
    return value.rstrip("/")


def _client(base_url, api_key="no-key-needed"):
    # No retries: a retried 5xx would hide the first answer and slow the suite down.
    return OpenAI(base_url=base_url + "/v1", api_key=api_key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def base_url():
    return _env("LEAFRESH_BASE_URL")


@pytest.fixture(scope="module")
def client(base_url):
    return _client(base_url)


@pytest.fixture(scope="module")
def small_client():
    return _client(_env("LEAFRESH_SMALL_CTX_BASE_URL"))


@pytest.fixture(scope="module")
def strict_client():
    """The small context with --context-overflow error and --default-max-tokens 24."""
    return _client(_env("LEAFRESH_STRICT_BASE_URL"))


@pytest.fixture(scope="module")
def auth_server():
    return _env("LEAFRESH_AUTH_BASE_URL"), _env("LEAFRESH_API_KEY")


def user(text):
    return [{"role": "user", "content": text}]


def complete(client, messages, **params):
    return client.chat.completions.create(model=ALIAS, messages=messages, **{**GREEDY, **params})


def stream_chunks(client, messages, **params):
    """All chunks of a streamed completion, each with the time it arrived."""
    started = time.perf_counter()
    stream = client.chat.completions.create(
        model=ALIAS,
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        **{**GREEDY, **params},
    )
    return started, [(time.perf_counter(), chunk) for chunk in stream]


def streamed_text(chunks):
    return "".join(c.choices[0].delta.content or "" for _, c in chunks if c.choices)


def finish_reasons(chunks):
    return [c.choices[0].finish_reason for _, c in chunks if c.choices and c.choices[0].finish_reason]


def check_usage(usage, max_completion):
    assert usage is not None, "no usage"
    assert usage.prompt_tokens > 0, usage
    assert 0 < usage.completion_tokens <= max_completion, usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage
    cached = usage.prompt_tokens_details.cached_tokens
    assert isinstance(cached, int) and 0 <= cached <= usage.prompt_tokens, usage


def http(method, url, body=None, headers=None):
    """A raw request (no SDK): (status, content type, body text)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read().decode()


# ---- models ----


def test_models_lists_the_model_and_its_alias(client):
    models = client.models.list().data
    ids = [m.id for m in models]
    assert ALIAS in ids, ids
    assert len(ids) == len(set(ids)) >= 2, f"the file's id and the alias, each once: {ids}"
    stem = os.environ.get("LEAFRESH_MODEL_ID")
    if stem:
        assert stem in ids, ids
    for m in models:
        assert m.object == "model" and m.owned_by == "leafresh-llm", m
        assert isinstance(m.created, int) and m.created > 0, m


def test_every_listed_model_id_answers(client):
    for model in client.models.list().data:
        r = client.chat.completions.create(model=model.id, messages=user(QUESTION), max_tokens=4, **GREEDY)
        assert r.choices[0].message.content is not None, (model.id, r)


# ---- non-streaming ----


def test_completion_has_an_assistant_message_and_usage(client):
    r = complete(client, user(QUESTION), max_tokens=16)
    assert r.object == "chat.completion", r
    assert r.id and isinstance(r.created, int), r
    assert len(r.choices) == 1, r
    choice = r.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant", choice
    assert isinstance(choice.message.content, str) and choice.message.content, choice
    assert choice.finish_reason in ("stop", "length"), choice
    check_usage(r.usage, 16)
    if choice.finish_reason == "length":
        assert r.usage.completion_tokens == 16, r.usage


def test_max_completion_tokens_bounds_the_answer(client):
    r = complete(client, user(QUESTION), max_completion_tokens=5)
    check_usage(r.usage, 5)
    if r.choices[0].finish_reason == "length":
        assert r.usage.completion_tokens == 5, r.usage


def test_a_repeated_prompt_comes_from_the_prompt_cache(client):
    messages = user("캐시 확인: 텀블러를 쓰는 챌린지를 추천해 줘.")
    first = complete(client, messages, max_tokens=4)
    second = complete(client, messages, max_tokens=4)
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached > 0, f"the same prompt twice, but nothing was cached: {second.usage}"


def test_text_parts_are_the_same_as_a_string(client):
    as_string = complete(client, user(QUESTION), max_tokens=12)
    as_parts = complete(client, [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}], max_tokens=12)
    assert as_parts.usage.prompt_tokens == as_string.usage.prompt_tokens
    assert as_parts.choices[0].message.content == as_string.choices[0].message.content


def test_sampling_parameters_are_accepted_and_the_seed_repeats(client):
    params = dict(
        temperature=0.9,
        top_p=0.9,
        seed=1234,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        max_tokens=24,
        extra_body={"top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1},
    )
    first = complete(client, user(QUESTION), **params)
    second = complete(client, user(QUESTION), **params)
    assert first.choices[0].message.content, first
    assert second.choices[0].message.content == first.choices[0].message.content, "same seed, other text"


# ---- streaming ----


def test_stream_equals_the_greedy_answer_and_ends_with_usage(client):
    messages = user(QUESTION)
    whole = complete(client, messages, max_tokens=48)
    _, chunks = stream_chunks(client, messages, max_tokens=48)

    assert chunks, "no chunks"
    assert all(c.object == "chat.completion.chunk" for _, c in chunks), chunks[0]
    assert len({c.id for _, c in chunks}) == 1, "every chunk of a completion has the same id"
    with_choices = [c for _, c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant", with_choices[0]
    assert streamed_text(chunks) == whole.choices[0].message.content
    assert finish_reasons(chunks) == [whole.choices[0].finish_reason], finish_reasons(chunks)

    # include_usage: one last chunk with no choices carries the usage; the others carry none.
    last = chunks[-1][1]
    assert last.choices == [] and last.usage is not None, last
    assert all(c.usage is None for _, c in chunks[:-1]), "usage before the last chunk"
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens, (last.usage, whole.usage)
    assert last.usage.completion_tokens == whole.usage.completion_tokens, (last.usage, whole.usage)
    check_usage(last.usage, 48)


def test_stream_without_include_usage_has_no_usage_chunk(client):
    stream = client.chat.completions.create(model=ALIAS, messages=user(QUESTION), stream=True, max_tokens=8, **GREEDY)
    chunks = list(stream)
    assert chunks and all(c.choices for c in chunks), "a chunk without choices"
    assert all(c.usage is None for c in chunks)


def test_stream_wire_format_ends_with_done(base_url):
    status, content_type, body = http(
        "POST",
        base_url + "/v1/chat/completions",
        {"model": ALIAS, "messages": user(QUESTION), "stream": True, "max_tokens": 8, "temperature": 0},
    )
    assert status == 200, body
    assert content_type.startswith("text/event-stream"), content_type
    data = [line[len("data:"):].strip() for line in body.splitlines() if line.startswith("data:")]
    assert data and data[-1] == "[DONE]", body[-300:]
    assert all(json.loads(d)["object"] == "chat.completion.chunk" for d in data[:-1])


def test_stream_arrives_token_by_token(client):
    # 1,000 tokens take a noticeable time even on the tiny model (about 0.5 s); a server that
    # generated the whole answer before sending it would deliver the first delta at the very end.
    complete(client, user(QUESTION), max_tokens=1)  # a warm connection: time only the generation
    started, chunks = stream_chunks(client, user("긴 이야기를 들려줘. " + QUESTION), max_tokens=1000)
    arrivals = [t - started for t, c in chunks if c.choices and c.choices[0].delta.content]
    tokens = chunks[-1][1].usage.completion_tokens
    assert tokens >= 300, f"the greedy answer stopped after {tokens} tokens; pick another prompt"
    assert len(arrivals) >= tokens // 4, f"{len(arrivals)} content deltas for {tokens} tokens"
    first, last = arrivals[0], arrivals[-1]
    assert first < 0.5 * last, (
        f"first delta at {first * 1000:.0f} ms, last at {last * 1000:.0f} ms: not streamed as generated"
    )
    # The deltas are spread over the generation, not a burst at its end.
    midpoint = first + (last - first) / 2
    early = sum(1 for t in arrivals if t < midpoint)
    assert early >= len(arrivals) // 5, f"only {early} of {len(arrivals)} deltas in the first half"


# ---- the conversation reaches the prompt ----


def test_earlier_turns_and_the_system_prompt_reach_the_prompt(client):
    earlier_question = "지난주에 플로깅을 했는데 공원에서 플라스틱 병을 서른 개나 주웠어. 다음에는 무엇을 하면 좋을까?"
    earlier_answer = "이번에는 텀블러 챌린지를 해 보세요. 일주일 동안 일회용 컵 대신 텀블러를 쓰는 것입니다."
    system = "너는 친환경 챌린지를 추천하는 도우미야. 항상 한국어로 짧게 대답해."
    follow_up = "그럼 그것 말고 다른 것도 알려줘."

    def prompt_tokens(messages):
        return complete(client, messages, max_tokens=1).usage.prompt_tokens

    # What one message adds to a one-message prompt, minus one token of slack per message for how
    # the text joins the template around it.
    baseline = prompt_tokens(user("가"))
    question_tokens = prompt_tokens(user(earlier_question)) - baseline - 1
    answer_tokens = prompt_tokens(user(earlier_answer)) - baseline - 1
    system_tokens = prompt_tokens([{"role": "system", "content": system}] + user("가")) - baseline - 1
    assert question_tokens > 10 and answer_tokens > 10 and system_tokens > 10

    alone = prompt_tokens(user(follow_up))
    history = [
        {"role": "user", "content": earlier_question},
        {"role": "assistant", "content": earlier_answer},
        {"role": "user", "content": follow_up},
    ]
    with_history = prompt_tokens(history)
    assert with_history >= alone + question_tokens + answer_tokens, (
        f"prompt of the follow-up: {alone} tokens alone, {with_history} with the earlier turn "
        f"(question {question_tokens} + answer {answer_tokens} tokens): the history did not reach the prompt"
    )
    with_system = prompt_tokens([{"role": "system", "content": system}] + history)
    assert with_system >= with_history + system_tokens, (with_system, with_history, system_tokens)


# ---- response_format ----

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 12},
        "category": {"type": "string", "enum": ["ZERO_WASTE", "PLOGGING", "VEGAN"]},
        "points": {"type": "integer"},
        "done": {"type": "boolean"},
    },
    "required": ["title", "category", "points", "done"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("sampling", [GREEDY, {"temperature": 1.0, "seed": 99}], ids=["greedy", "sampled"])
def test_json_schema_answer_validates(client, sampling):
    r = client.chat.completions.create(
        model=ALIAS,
        messages=user("챌린지 하나를 JSON으로 알려줘."),
        response_format={"type": "json_schema", "json_schema": {"name": "challenge", "schema": SCHEMA, "strict": True}},
        max_tokens=300,
        **sampling,
    )
    content = r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop", f"did not finish within 300 tokens: {content!r}"
    value = json.loads(content)
    jsonschema.validate(value, SCHEMA)


def test_json_object_answer_is_an_object(client):
    # json_object bounds no string, so the random model may still be inside its first one when the
    # budget ends; it must have started an object, and a finished answer must be one.
    r = complete(client, user("JSON 객체로 대답해."), response_format={"type": "json_object"}, max_tokens=200)
    content = r.choices[0].message.content
    assert content.lstrip().startswith("{"), content
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict), content


# ---- stop sequences ----


def pick_stop(text):
    """Three non-space characters from the middle of `text`, first seen at index >= 2, right after
    a non-space character (so the cut is not next to whitespace a server might trim)."""
    middle = len(text) // 2
    for start in list(range(middle, len(text) - 3)) + list(range(middle - 1, 1, -1)):
        candidate = text[start : start + 3]
        if any(c.isspace() for c in candidate):
            continue
        at = text.find(candidate)
        if at >= 2 and not text[at - 1].isspace():
            return candidate, at
    pytest.fail(f"no usable stop string in {text!r}")


def test_stop_sequence_cuts_the_answer_before_it(client):
    messages = user("에너지 절약 챌린지를 길게 설명해 줘.")
    full = complete(client, messages, max_tokens=64).choices[0].message.content
    assert len(full) >= 12, f"greedy answer too short to cut: {full!r}"
    stop, at = pick_stop(full)

    r = complete(client, messages, max_tokens=64, stop=["@@never-seen@@", stop])
    assert r.choices[0].message.content == full[:at], (stop, full)
    assert r.choices[0].finish_reason == "stop"

    single = complete(client, messages, max_tokens=64, stop=stop)
    assert single.choices[0].message.content == full[:at], (stop, full)

    _, chunks = stream_chunks(client, messages, max_tokens=64, stop=[stop])
    assert streamed_text(chunks) == full[:at], (stop, full)
    assert finish_reasons(chunks) == ["stop"]


# ---- errors ----


def test_too_long_prompt_is_context_length_exceeded(small_client):
    long_prompt = "가나다라마바사아자차카타파하 " * 150  # ~2,000 tokens, the context is 512
    with pytest.raises(openai.BadRequestError) as err:
        small_client.chat.completions.create(model=ALIAS, messages=user(long_prompt), max_tokens=8)
    assert err.value.status_code == 400
    assert err.value.code == "context_length_exceeded", err.value.body
    assert "512" in err.value.message, f"the message should give the counts: {err.value.message}"


def test_too_long_prompt_is_refused_before_a_stream_starts(small_client):
    long_prompt = "가나다라마바사아자차카타파하 " * 150
    with pytest.raises(openai.BadRequestError) as err:
        stream = small_client.chat.completions.create(
            model=ALIAS, messages=user(long_prompt), max_tokens=8, stream=True
        )
        list(stream)
    assert err.value.code == "context_length_exceeded", err.value.body


def test_a_prompt_that_fits_the_small_context_works(small_client):
    r = small_client.chat.completions.create(model=ALIAS, messages=user(QUESTION), max_tokens=8, **GREEDY)
    check_usage(r.usage, 8)


# ---- long chats ----


def long_chat(turns):
    """A system prompt, `turns` user/assistant exchanges of ~60 tokens each, and a question."""
    messages = [{"role": "system", "content": "짧게 답하세요."}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"질문 {i}: " + "분리수거 방법을 알려줘 " * 6})
        messages.append({"role": "assistant", "content": f"답 {i}: " + "종이와 플라스틱을 나눠요 " * 6})
    messages.append({"role": "user", "content": QUESTION})
    return messages


def test_a_chat_longer_than_the_context_loses_its_oldest_turns(small_client):
    messages = long_chat(12)  # ~1,500 tokens; the context is 512
    r = small_client.chat.completions.create(model=ALIAS, messages=messages, max_tokens=16, **GREEDY)
    dropped = r.usage.model_extra.get("messages_dropped")
    assert dropped and dropped % 2 == 0 and dropped < len(messages) - 2, r.usage
    assert r.usage.prompt_tokens + 16 <= 512, r.usage
    # The same trimmed conversation, sent as such, is the same prompt.
    kept = [messages[0]] + messages[1 + dropped:]
    again = small_client.chat.completions.create(model=ALIAS, messages=kept, max_tokens=16, **GREEDY)
    assert again.usage.prompt_tokens == r.usage.prompt_tokens
    assert again.usage.model_extra.get("messages_dropped") is None
    assert again.choices[0].message.content == r.choices[0].message.content


def test_trimming_streams_too(small_client):
    _, chunks = stream_chunks(small_client, long_chat(12), max_tokens=8)
    usage = chunks[-1][1].usage
    assert usage.model_extra.get("messages_dropped", 0) > 0, usage


def test_with_context_overflow_error_a_long_chat_is_refused(strict_client):
    with pytest.raises(openai.BadRequestError) as err:
        strict_client.chat.completions.create(model=ALIAS, messages=long_chat(12), max_tokens=16)
    assert err.value.code == "context_length_exceeded", err.value.body


def test_without_max_tokens_the_default_cap_bounds_the_answer(strict_client):
    r = strict_client.chat.completions.create(model=ALIAS, messages=user(QUESTION), **GREEDY)
    assert r.usage.completion_tokens <= 24, r.usage
    assert r.choices[0].finish_reason in ("length", "stop")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_unknown_model_is_not_found(client, stream):
    with pytest.raises(openai.NotFoundError) as err:
        r = client.chat.completions.create(model="gpt-4o", messages=user(QUESTION), max_tokens=4, stream=stream)
        if stream:
            list(r)
    assert err.value.status_code == 404
    assert err.value.code == "model_not_found", err.value.body
    assert "gpt-4o" in err.value.message


def test_n_above_the_limit_is_refused(client):
    with pytest.raises(openai.BadRequestError) as err:
        complete(client, user(QUESTION), max_tokens=4, n=17)
    assert err.value.body["type"] == "invalid_request_error", err.value.body
    assert err.value.param == "n", err.value.body


def test_an_image_part_is_refused_as_text_only(client):
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "이 사진 속 쓰레기는?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        }
    ]
    with pytest.raises(openai.BadRequestError) as err:
        complete(client, messages, max_tokens=4)
    assert err.value.body["type"] == "invalid_request_error", err.value.body
    assert "text" in err.value.message.lower(), err.value.message
    assert err.value.param.startswith("messages[0].content"), err.value.body


@pytest.mark.parametrize(
    "field, params, code",
    [
        ("max_tokens", {"max_tokens": 0}, "integer_below_min_value"),
        ("temperature", {"temperature": -0.5}, "decimal_below_min_value"),
        ("temperature", {"temperature": 9}, "decimal_above_max_value"),
        ("stop", {"stop": ["a", "b", "c", "d", "e"]}, "array_above_max_length"),
        ("messages", {"messages": []}, "empty_array"),
    ],
)
def test_bad_values_are_refused_naming_the_field(client, field, params, code):
    request = {"model": ALIAS, "messages": user(QUESTION), "max_tokens": 4, **params}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**request)
    assert err.value.body["type"] == "invalid_request_error", err.value.body
    assert err.value.param == field and field in err.value.message, err.value.body
    assert err.value.code == code, err.value.body


# ---- API key ----


def test_the_api_key_is_required_and_accepted(auth_server):
    base, key = auth_server
    # No Authorization header at all (the SDK refuses an empty key, so the header is omitted), then
    # a wrong key.
    for api_key, headers in (("unused", {"Authorization": openai.Omit()}), ("wrong-key", None)):
        with pytest.raises(openai.AuthenticationError) as err:
            _client(base, api_key).models.list(extra_headers=headers)
        assert err.value.status_code == 401
        assert err.value.body["type"] == "authentication_error", err.value.body
        with pytest.raises(openai.AuthenticationError):
            _client(base, api_key).chat.completions.create(
                model=ALIAS, messages=user(QUESTION), max_tokens=4, extra_headers=headers
            )

    good = _client(base, api_key=key)
    assert ALIAS in [m.id for m in good.models.list().data]
    r = good.chat.completions.create(model=ALIAS, messages=user(QUESTION), max_tokens=4, **GREEDY)
    check_usage(r.usage, 4)


def test_health_and_the_test_page_stay_public(auth_server):
    base, _ = auth_server
    assert http("GET", base + "/health")[0] == 200
    status, content_type, _ = http("GET", base + "/")
    assert status == 200 and content_type.startswith("text/html"), (status, content_type)
    status, _, body = http("GET", base + "/v1/models")
    assert status == 401, body
    assert json.loads(body)["error"]["type"] == "authentication_error", body


# ---- tools ----

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather of a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 12},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit", "days"],
            "additionalProperties": False,
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {"name": "now", "description": "The time",
                 "parameters": {"type": "object", "properties": {}, "additionalProperties": False}},
}
TOOLS = [WEATHER, CLOCK]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def check_calls(calls, names=None):
    """Every call names an offered function, has an id, and arguments valid for its schema."""
    assert calls, "no tool calls"
    for call in calls:
        assert call.type == "function"
        assert call.id and len(call.id) == 9 and call.id.isalnum(), call.id
        assert call.function.name in (names or SCHEMAS), call.function.name
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    assert len({c.id for c in calls}) == len(calls)


def push_tool_calls():
    """`logit_bias` that makes the tiny model begin with `[TOOL_CALLS]`, as a real model asked
    about the weather would (`auto` leaves the choice to the model)."""
    return {str(_env_token()): 100}


def _env_token():
    value = os.environ.get("LEAFRESH_TOOL_CALLS_TOKEN", "").strip()
    if not value:
        pytest.skip("LEAFRESH_TOOL_CALLS_TOKEN is not set (tests/integration/openai_sdk.rs sets it)")
    return int(value)


@pytest.mark.parametrize("sampling", [GREEDY, {"temperature": 1.0, "seed": 5}], ids=["greedy", "sampled"])
def test_required_tool_choice_calls_with_valid_arguments(client, sampling):
    r = complete(client, user("서울 날씨 알려줘"), tools=TOOLS, tool_choice="required", max_tokens=200, **sampling)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    check_calls(choice.message.tool_calls)
    assert not choice.message.content


def test_a_named_function_is_the_one_called_once_without_parallel_calls(client):
    r = complete(client, user("지금 몇 시야?"), tools=TOOLS, max_tokens=200, parallel_tool_calls=False,
                 tool_choice={"type": "function", "function": {"name": "get_weather"}}, **GREEDY)
    calls = r.choices[0].message.tool_calls
    check_calls(calls, names={"get_weather"})
    assert len(calls) == 1


def test_auto_calls_when_the_model_begins_a_call_and_then_its_grammar_applies(client):
    r = complete(client, user("서울 날씨?"), tools=TOOLS, tool_choice="auto", max_tokens=200,
                 logit_bias=push_tool_calls(), **GREEDY)
    assert r.choices[0].finish_reason == "tool_calls"
    check_calls(r.choices[0].message.tool_calls)


def test_auto_without_a_call_answers_text(client):
    r = complete(client, user("안녕"), tools=TOOLS, max_tokens=16, logit_bias={str(_env_token()): -100}, **GREEDY)
    choice = r.choices[0]
    assert choice.message.tool_calls is None and choice.message.content
    assert choice.finish_reason in ("stop", "length")


def test_none_never_calls(client):
    r = complete(client, user("서울 날씨?"), tools=TOOLS, tool_choice="none", max_tokens=16,
                 logit_bias=push_tool_calls(), **GREEDY)
    assert r.choices[0].message.tool_calls is None
    assert r.choices[0].finish_reason != "tool_calls"


def test_streamed_tool_calls_come_as_openai_streams_them(client):
    _, timed = stream_chunks(client, user("서울 날씨 알려줘"), tools=TOOLS, tool_choice="required", max_tokens=200)
    deltas = [d for _, c in timed if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    # The first delta of each call carries its index, id, type and name; the others arguments.
    firsts = [d for d in deltas if d.id]
    assert firsts and all(d.function.name and d.type == "function" for d in firsts)
    assert len(deltas) > len(firsts), "the arguments come in pieces after the name"
    calls = {}
    for d in deltas:
        call = calls.setdefault(d.index, {"id": d.id, "name": d.function.name, "arguments": ""})
        call["arguments"] += d.function.arguments or ""
    for call in calls.values():
        jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])
    assert finish_reasons(timed) == ["tool_calls"]
    # The same as the whole answer.
    whole = complete(client, user("서울 날씨 알려줘"), tools=TOOLS, tool_choice="required", max_tokens=200, **GREEDY)
    assert [(c.function.name, c.function.arguments) for c in whole.choices[0].message.tool_calls] == \
        [(c["name"], c["arguments"]) for c in calls.values()]


def test_a_round_trip_call_result_answer(client):
    messages = user("서울 날씨 알려줘")
    first = complete(client, messages, tools=TOOLS, tool_choice="required", max_tokens=200, **GREEDY)
    message = first.choices[0].message
    check_calls(message.tool_calls)
    messages.append(message.model_dump(exclude_none=True))
    for call in message.tool_calls:
        messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp": 3, "sky": "맑음"})})
    final = complete(client, messages, tools=TOOLS, max_tokens=24, logit_bias={str(_env_token()): -100}, **GREEDY)
    assert final.choices[0].message.content
    assert final.choices[0].message.tool_calls is None
    # The history's call and result reached the prompt.
    assert final.usage.prompt_tokens > first.usage.prompt_tokens + 10


def test_a_pydantic_function_tool_with_nested_models_is_called_with_valid_arguments(client):
    # The SDK's own helper gives `$defs` and `$ref` for a model that nests another; the refs
    # resolve against the function's own parameters.
    from pydantic import BaseModel, Field

    class Place(BaseModel):
        # Bounded, as the tiny model's random text would otherwise fill the budget.
        city: str = Field(max_length=8)

    class Trip(BaseModel):
        start: Place
        end: Place

    tool = openai.pydantic_function_tool(Trip)
    assert "$defs" in tool["function"]["parameters"]
    for choice in ("auto", "required"):
        r = complete(client, user("서울에서 부산까지"), tools=[tool], tool_choice=choice, max_tokens=200, **GREEDY)
        if choice == "required":
            assert r.choices[0].finish_reason == "tool_calls", r.choices[0]
            arguments = json.loads(r.choices[0].message.tool_calls[0].function.arguments)
            Trip.model_validate(arguments)


def test_a_tool_message_needs_the_id_of_its_call(client):
    with pytest.raises(openai.BadRequestError) as e:
        complete(client, user("a") + [{"role": "tool", "content": "x"}], max_tokens=4)
    assert e.value.body["param"] == "messages[1].tool_call_id"
    assert e.value.body["code"] == "missing_required_parameter"


def test_a_named_function_that_is_not_offered_is_refused(client):
    with pytest.raises(openai.BadRequestError) as e:
        complete(client, user("a"), tools=TOOLS, max_tokens=4,
                 tool_choice={"type": "function", "function": {"name": "delete_everything"}})
    assert e.value.body["param"] == "tool_choice"


def big_tools(n):
    """`n` functions whose definitions alone outgrow the small server's context."""
    return [{"type": "function", "function": {
        "name": f"tool_{i}", "description": "Looks things up. " * 20,
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}
        for i in range(n)]


def test_tools_that_leave_no_room_are_left_out_with_auto(small_client):
    r = small_client.chat.completions.create(model=ALIAS, messages=user("안녕"), tools=big_tools(8),
                                             max_tokens=8, **GREEDY)
    assert r.choices[0].message.content
    assert r.usage.model_extra["tools_dropped"] == 8


def test_tools_that_leave_no_room_are_refused_when_a_call_is_required(small_client):
    with pytest.raises(openai.BadRequestError) as e:
        small_client.chat.completions.create(model=ALIAS, messages=user("안녕"), tools=big_tools(8),
                                             tool_choice="required", max_tokens=8, **GREEDY)
    assert e.value.body["code"] == "context_length_exceeded"
