"""The protocol endpoints driven by the official `openai` package, as its README and API reference
show them: legacy text completions (`client.completions.create`), chat logprobs and `n`, the
Responses API (`client.responses.create / stream / parse / retrieve`), the parse helpers, and the
errors a client sees for embeddings and unknown paths.

With random weights (the default) only shapes, counts, determinism and grammar are checked;
with LEAFRESH_REAL_WEIGHTS=1 the text must also be non-empty. Fixtures: conftest.py.
"""

import json
from typing import Literal

import openai
import pytest
from pydantic import BaseModel, Field

from client_helpers import CHALLENGE_SCHEMA, WEATHER_SCHEMA, parse_json, pick_stop, validate

GREEDY = {"temperature": 0}
PROMPT = "The easiest way to save energy at the office is"
OTHER_PROMPT = "A good zero-waste habit for lunch is"
QUESTION = "Suggest one eco-friendly challenge for the office."
# Ids of ordinary text tokens in both test vocabularies (the tiny one has 12,337 tokens, its
# special and byte tokens below 265; Gemma 3's ordinary pieces start well below 1,000).
TOKEN_IDS = [1000, 1100, 1200, 1300, 1400, 1500]


def check_chat_usage(usage, max_completion, flow):
    """`usage` of /v1/completions or /v1/chat/completions."""
    assert usage is not None, f"{flow}: no usage"
    assert usage.prompt_tokens > 0, f"{flow}: {usage}"
    assert 0 < usage.completion_tokens <= max_completion, f"{flow}: {usage}"
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, f"{flow}: {usage}"


def check_response_usage(usage, max_output, flow):
    """`usage` of /v1/responses: every field the SDK's ResponseUsage requires."""
    assert usage is not None, f"{flow}: no usage"
    assert usage.input_tokens > 0, f"{flow}: {usage}"
    assert 0 < usage.output_tokens <= max_output, f"{flow}: {usage}"
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens, f"{flow}: {usage}"
    cached = usage.input_tokens_details.cached_tokens
    assert isinstance(cached, int) and 0 <= cached <= usage.input_tokens, f"{flow}: {usage}"
    assert usage.output_tokens_details.reasoning_tokens == 0, f"{flow}: {usage}"


def user(text):
    return [{"role": "user", "content": text}]


# ---- /v1/completions ----


def complete(client, model, **params):
    return client.completions.create(model=model, **{**GREEDY, **params})


def test_completions_create_with_a_string_prompt(openai_client, model, real_weights):
    flow = "completions.create(prompt=str)"
    r = complete(openai_client, model, prompt=PROMPT, max_tokens=12)
    assert r.object == "text_completion", f"{flow}: {r}"
    assert r.id and isinstance(r.created, int) and r.created > 0 and r.model, f"{flow}: {r}"
    assert len(r.choices) == 1, f"{flow}: {r}"
    choice = r.choices[0]
    assert choice.index == 0 and isinstance(choice.text, str), f"{flow}: {choice}"
    assert choice.finish_reason in ("stop", "length"), f"{flow}: {choice}"
    assert choice.logprobs is None, f"{flow}: logprobs were not asked for: {choice}"
    check_chat_usage(r.usage, 12, flow)
    if choice.finish_reason == "length":
        assert r.usage.completion_tokens == 12, f"{flow}: {r.usage}"
    if real_weights:
        assert choice.text.strip(), f"{flow}: empty text"


def test_completions_create_with_a_token_id_prompt(openai_client, model):
    flow = "completions.create(prompt=[token ids])"
    r = complete(openai_client, model, prompt=TOKEN_IDS, max_tokens=8)
    assert r.object == "text_completion" and len(r.choices) == 1, f"{flow}: {r}"
    assert isinstance(r.choices[0].text, str), f"{flow}: {r}"
    # The ids are the prompt (a server may put BOS before them).
    assert len(TOKEN_IDS) <= r.usage.prompt_tokens <= len(TOKEN_IDS) + 1, f"{flow}: {r.usage}"
    check_chat_usage(r.usage, 8, flow)


def test_completions_create_with_a_list_of_token_id_lists(openai_client, model):
    flow = "completions.create(prompt=[[ids], [ids]])"
    single = complete(openai_client, model, prompt=TOKEN_IDS, max_tokens=8)
    r = complete(openai_client, model, prompt=[TOKEN_IDS, TOKEN_IDS[:3]], max_tokens=8)
    assert sorted(c.index for c in r.choices) == [0, 1], f"{flow}: {r.choices}"
    first = next(c for c in r.choices if c.index == 0)
    assert first.text == single.choices[0].text, f"{flow}: greedy choice 0 differs from the same prompt alone"
    assert r.usage.prompt_tokens > single.usage.prompt_tokens, f"{flow}: both prompts count: {r.usage}"
    check_chat_usage(r.usage, 16, flow)


def test_completions_create_with_a_list_of_prompts_gives_one_choice_each(openai_client, model):
    flow = "completions.create(prompt=[str, str])"
    alone = [complete(openai_client, model, prompt=p, max_tokens=8) for p in (PROMPT, OTHER_PROMPT)]
    r = complete(openai_client, model, prompt=[PROMPT, OTHER_PROMPT], max_tokens=8)
    choices = sorted(r.choices, key=lambda c: c.index)
    assert [c.index for c in choices] == [0, 1], f"{flow}: {r.choices}"
    assert [c.text for c in choices] == [a.choices[0].text for a in alone], f"{flow}: greedy choices differ from the prompts alone"
    assert r.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone), f"{flow}: {r.usage}"
    assert r.usage.completion_tokens == sum(a.usage.completion_tokens for a in alone), f"{flow}: {r.usage}"


def test_completions_n_2_gives_two_choices_and_counts_the_prompt_once(openai_client, model):
    flow = "completions.create(n=2)"
    params = dict(prompt=PROMPT, max_tokens=12, temperature=1.0, seed=4242)
    one = complete(openai_client, model, prompt=PROMPT, max_tokens=1)
    r = openai_client.completions.create(model=model, n=2, **params)
    choices = sorted(r.choices, key=lambda c: c.index)
    assert [c.index for c in choices] == [0, 1], f"{flow}: {r.choices}"
    assert r.usage.prompt_tokens == one.usage.prompt_tokens, f"{flow}: the prompt counts once: {r.usage}"
    check_chat_usage(r.usage, 24, flow)
    assert choices[0].text != choices[1].text, f"{flow}: two sampled choices are identical: {choices}"
    again = openai_client.completions.create(model=model, n=2, **params)
    assert [c.text for c in sorted(again.choices, key=lambda c: c.index)] == [c.text for c in choices], \
        f"{flow}: the same seed gave other choices"


def test_completions_echo_puts_the_prompt_before_the_completion(openai_client, model):
    flow = "completions.create(echo=True)"
    plain = complete(openai_client, model, prompt=PROMPT, max_tokens=6)
    echoed = complete(openai_client, model, prompt=PROMPT, max_tokens=6, echo=True)
    assert echoed.choices[0].text == PROMPT + plain.choices[0].text, f"{flow}: {echoed.choices[0].text!r}"
    assert echoed.usage.completion_tokens == plain.usage.completion_tokens, f"{flow}: {echoed.usage}"


def test_completions_logprobs_give_tokens_offsets_and_alternatives(openai_client, model):
    flow = "completions.create(logprobs=3)"
    r = complete(openai_client, model, prompt=PROMPT, max_tokens=6, logprobs=3)
    lp = r.choices[0].logprobs
    assert lp is not None, f"{flow}: no logprobs"
    n = r.usage.completion_tokens
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == n, \
        f"{flow}: one entry per generated token ({n}): {lp}"
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert isinstance(token, str) and value <= 0, f"{flow}: {token!r} {value}"
        # The 3 most likely tokens, plus the sampled one when it is not among them; tokens with
        # the same text share a key.
        assert isinstance(top, dict) and 1 <= len(top) <= 4, f"{flow}: {top}"
        assert all(v <= 0 for v in top.values()), f"{flow}: {top}"
        assert value <= max(top.values()) + 1e-6, f"{flow}: the sampled token beats the most likely one: {value} {top}"
    assert lp.text_offset == sorted(lp.text_offset), f"{flow}: offsets go back: {lp.text_offset}"


def test_completions_stream_sends_text_completion_chunks_then_usage(openai_client, model):
    flow = "completions.create(stream=True, stream_options.include_usage)"
    whole = complete(openai_client, model, prompt=PROMPT, max_tokens=16)
    chunks = list(complete(openai_client, model, prompt=PROMPT, max_tokens=16, stream=True,
                           stream_options={"include_usage": True}))
    assert chunks, f"{flow}: no chunks"
    assert all(c.object == "text_completion" for c in chunks), f"{flow}: {chunks[0]}"
    assert len({c.id for c in chunks}) == 1, f"{flow}: every chunk has the completion's id"
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text, f"{flow}: streamed {text!r} vs {whole.choices[0].text!r}"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason], f"{flow}: {finishes}"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None, f"{flow}: the last chunk carries the usage: {last}"
    assert all(c.usage is None for c in chunks[:-1]), f"{flow}: usage before the last chunk"
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == \
        (whole.usage.prompt_tokens, whole.usage.completion_tokens), f"{flow}: {last.usage} vs {whole.usage}"


def test_completions_stop_cuts_the_text_before_the_stop_string(openai_client, model):
    flow = "completions.create(stop=[...])"
    full = complete(openai_client, model, prompt=PROMPT, max_tokens=48).choices[0].text
    picked = pick_stop(full)
    assert picked, f"{flow}: no usable stop string in the greedy text {full!r}"
    stop, at = picked
    r = complete(openai_client, model, prompt=PROMPT, max_tokens=48, stop=["@@never-seen@@", stop])
    assert r.choices[0].text == full[:at], f"{flow}: stop {stop!r} in {full!r}: {r.choices[0].text!r}"
    assert r.choices[0].finish_reason == "stop", f"{flow}: {r.choices[0]}"


def test_completions_seed_reproduces_sampled_text(openai_client, model):
    flow = "completions.create(seed=...)"
    params = dict(prompt=PROMPT, max_tokens=16, temperature=1.0, top_p=0.9, seed=1234)
    first = openai_client.completions.create(model=model, **params)
    second = openai_client.completions.create(model=model, **params)
    assert first.choices[0].text == second.choices[0].text, f"{flow}: same seed, other text"


def test_completions_suffix_needs_fill_in_the_middle_tokens(openai_client, model, has_fim):
    flow = "completions.create(suffix=...)"
    params = dict(prompt="def add(a, b):\n    ", suffix="\n    return c\n", max_tokens=8)
    if has_fim:
        r = complete(openai_client, model, **params)
        assert isinstance(r.choices[0].text, str), f"{flow}: {r}"
        return
    with pytest.raises(openai.BadRequestError) as err:
        complete(openai_client, model, **params)
    assert err.value.body["type"] == "invalid_request_error", f"{flow}: {err.value.body}"
    assert err.value.param == "suffix", f"{flow}: the error names the field: {err.value.body}"


@pytest.mark.parametrize(
    "endpoint, params, field",
    [
        ("completions", {"prompt": PROMPT, "logprobs": 21}, "logprobs"),
        ("chat", {"messages": user(QUESTION), "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ],
    ids=["completions-logprobs-21", "chat-top_logprobs-21"],
)
def test_out_of_range_logprobs_are_refused_naming_the_field(openai_client, model, endpoint, params, field):
    flow = f"{endpoint} with {field} out of range"
    create = openai_client.completions.create if endpoint == "completions" else openai_client.chat.completions.create
    with pytest.raises(openai.BadRequestError) as err:
        create(model=model, max_tokens=4, **params)
    assert err.value.body["type"] == "invalid_request_error", f"{flow}: {err.value.body}"
    assert err.value.param == field, f"{flow}: {err.value.body}"


# ---- /v1/chat/completions: logprobs and n ----


def check_token_logprob(item, n_top, flow):
    """One entry of `choice.logprobs.content`."""
    assert isinstance(item.token, str), f"{flow}: {item}"
    assert item.logprob <= 0, f"{flow}: {item}"
    assert isinstance(item.bytes, list) and all(isinstance(b, int) and 0 <= b <= 255 for b in item.bytes), \
        f"{flow}: bytes: {item}"
    try:
        assert item.token == bytes(item.bytes).decode("utf-8"), f"{flow}: token and bytes differ: {item}"
    except UnicodeDecodeError:
        pass  # a piece of a character split across tokens
    assert len(item.top_logprobs) == n_top, f"{flow}: {n_top} alternatives asked, {len(item.top_logprobs)} given"
    values = [t.logprob for t in item.top_logprobs]
    assert values == sorted(values, reverse=True), f"{flow}: top_logprobs not sorted: {values}"
    for top in item.top_logprobs:
        assert isinstance(top.token, str) and top.logprob <= 0, f"{flow}: {top}"
        assert isinstance(top.bytes, list), f"{flow}: bytes: {top}"
    if n_top:
        assert item.logprob <= values[0] + 1e-6, f"{flow}: the sampled token beats the most likely one: {item}"


def check_bytes_spell_the_text(items, text, flow):
    joined = b"".join(bytes(item.bytes) for item in items)
    assert text in (joined.decode("utf-8", errors="replace"), joined.decode("utf-8", errors="ignore")), \
        f"{flow}: the tokens' bytes {joined!r} do not spell {text!r}"


@pytest.mark.parametrize("n_top", [0, 3, 20])
def test_chat_logprobs_with_top_logprobs(openai_client, model, n_top):
    flow = f"chat.completions.create(logprobs=True, top_logprobs={n_top})"
    r = openai_client.chat.completions.create(model=model, messages=user(QUESTION), max_tokens=8,
                                              logprobs=True, top_logprobs=n_top, **GREEDY)
    choice = r.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None, f"{flow}: no logprobs: {choice}"
    items = choice.logprobs.content
    assert len(items) == r.usage.completion_tokens, f"{flow}: one entry per token: {len(items)} vs {r.usage}"
    for item in items:
        check_token_logprob(item, n_top, flow)
    check_bytes_spell_the_text(items, choice.message.content, flow)


def test_chat_logprobs_streamed_are_those_of_the_whole_answer(openai_client, model):
    flow = "chat.completions.create(stream=True, logprobs=True, top_logprobs=2)"
    params = dict(model=model, messages=user(QUESTION), max_tokens=12, logprobs=True, top_logprobs=2, **GREEDY)
    whole = openai_client.chat.completions.create(**params)
    chunks = list(openai_client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **params))
    items = [item for c in chunks if c.choices and c.choices[0].logprobs and c.choices[0].logprobs.content
             for item in c.choices[0].logprobs.content]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(items) == chunks[-1].usage.completion_tokens, f"{flow}: {len(items)} entries, {chunks[-1].usage}"
    for item in items:
        check_token_logprob(item, 2, flow)
    check_bytes_spell_the_text(items, text, flow)
    expected = whole.choices[0].logprobs.content
    assert [i.token for i in items] == [i.token for i in expected], f"{flow}: other tokens than the whole answer"
    for got, want in zip(items, expected):
        assert abs(got.logprob - want.logprob) < 1e-3, f"{flow}: {got} vs {want}"


def sampled_chat(client, model, **params):
    return client.chat.completions.create(model=model, messages=user(QUESTION), n=2, max_tokens=12,
                                          temperature=1.0, seed=31337, **params)


def test_chat_n_2_gives_two_indexed_choices_and_counts_the_prompt_once(openai_client, model, real_weights):
    flow = "chat.completions.create(n=2)"
    one = openai_client.chat.completions.create(model=model, messages=user(QUESTION), max_tokens=1, **GREEDY)
    r = sampled_chat(openai_client, model)
    choices = sorted(r.choices, key=lambda c: c.index)
    assert [c.index for c in choices] == [0, 1], f"{flow}: {r.choices}"
    for c in choices:
        assert c.message.role == "assistant" and isinstance(c.message.content, str), f"{flow}: {c}"
        assert c.finish_reason in ("stop", "length"), f"{flow}: {c}"
        if real_weights:
            assert c.message.content.strip(), f"{flow}: empty choice {c.index}"
    assert r.usage.prompt_tokens == one.usage.prompt_tokens, f"{flow}: the prompt counts once: {r.usage}"
    check_chat_usage(r.usage, 24, flow)
    assert choices[0].message.content != choices[1].message.content, f"{flow}: two sampled choices are identical"


def test_chat_n_2_seeded_choices_are_reproducible_streamed_or_not(openai_client, model):
    flow = "chat.completions.create(n=2, seed)"
    first = [c.message.content for c in sorted(sampled_chat(openai_client, model).choices, key=lambda c: c.index)]
    second = [c.message.content for c in sorted(sampled_chat(openai_client, model).choices, key=lambda c: c.index)]
    assert first == second, f"{flow}: the same seed gave other choices"

    chunks = list(sampled_chat(openai_client, model, stream=True, stream_options={"include_usage": True}))
    texts, finishes = {}, {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finishes.setdefault(choice.index, []).append(choice.finish_reason)
    assert sorted(texts) == [0, 1], f"{flow} streamed: choice indices {sorted(texts)}"
    assert all(len(f) == 1 for f in finishes.values()) and sorted(finishes) == [0, 1], \
        f"{flow} streamed: one finish_reason per choice: {finishes}"
    assert [texts[0], texts[1]] == first, f"{flow}: the stream gave other choices than the whole answer"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None, f"{flow} streamed: usage last"


# ---- /v1/responses ----

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather of a city",
    "parameters": WEATHER_SCHEMA,
    "strict": True,
}
CLOCK_TOOL = {
    "type": "function",
    "name": "now",
    "description": "The time",
    "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
    "strict": True,
}
TOOLS = [WEATHER_TOOL, CLOCK_TOOL]
SCHEMAS = {t["name"]: t["parameters"] for t in TOOLS}


def respond(client, model, **params):
    return client.responses.create(model=model, **{**GREEDY, **params})


def message_items(response):
    return [item for item in response.output if item.type == "message"]


def function_calls(response):
    return [item for item in response.output if item.type == "function_call"]


def check_response(r, max_output, flow):
    """A finished Response with one assistant message."""
    assert r.object == "response", f"{flow}: {r}"
    assert r.id.startswith("resp_"), f"{flow}: OpenAI's ids (and LangChain's use_previous_response_id) start with resp_: {r.id}"
    assert isinstance(r.created_at, (int, float)) and r.model, f"{flow}: {r}"
    assert r.error is None, f"{flow}: {r.error}"
    # Required by the SDK's Response type.
    assert isinstance(r.tools, list) and r.tool_choice is not None and isinstance(r.parallel_tool_calls, bool), \
        f"{flow}: tools, tool_choice and parallel_tool_calls are required fields: {r}"
    assert r.status in ("completed", "incomplete"), f"{flow}: {r.status}"
    if r.status == "incomplete":
        assert r.incomplete_details is not None and r.incomplete_details.reason == "max_output_tokens", f"{flow}: {r}"
        assert r.usage.output_tokens == max_output, f"{flow}: cut, so the whole budget was used: {r.usage}"
    messages = message_items(r)
    assert len(messages) == 1, f"{flow}: {r.output}"
    message = messages[0]
    assert message.role == "assistant" and message.id and message.status in ("completed", "incomplete"), f"{flow}: {message}"
    assert [c.type for c in message.content] == ["output_text"], f"{flow}: {message.content}"
    assert message.content[0].annotations == [], f"{flow}: annotations is a (required) list: {message.content[0]}"
    assert r.output_text == message.content[0].text, f"{flow}"
    check_response_usage(r.usage, max_output, flow)


def test_responses_create_with_text_input(openai_client, model, real_weights):
    flow = "responses.create(input=str, instructions)"
    r = respond(openai_client, model, input=QUESTION, instructions="Answer in one sentence.", max_output_tokens=16)
    check_response(r, 16, flow)
    if real_weights:
        assert r.output_text.strip(), f"{flow}: empty text"


def test_responses_text_input_and_message_items_are_the_same_prompt(openai_client, model):
    flow = "responses.create(input=[items])"
    as_text = respond(openai_client, model, input=QUESTION, max_output_tokens=8)
    easy = respond(openai_client, model, input=[{"role": "user", "content": QUESTION}], max_output_tokens=8)
    typed = respond(openai_client, model, max_output_tokens=8, input=[
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": QUESTION}]}])
    for r in (easy, typed):
        check_response(r, 8, flow)
        assert r.usage.input_tokens == as_text.usage.input_tokens, f"{flow}: {r.usage} vs {as_text.usage}"
        assert r.output_text == as_text.output_text, f"{flow}: greedy answers differ"


def test_responses_stream_events_come_in_order(openai_client, model):
    flow = "responses.create(stream=True)"
    whole = respond(openai_client, model, input=QUESTION, max_output_tokens=16)
    events = list(respond(openai_client, model, input=QUESTION, max_output_tokens=16, stream=True))
    assert events, f"{flow}: no events"
    types = [e.type for e in events]
    assert types[0] == "response.created", f"{flow}: {types}"
    assert types[-1] in ("response.completed", "response.incomplete"), f"{flow}: {types}"
    order = ["response.created", "response.output_item.added", "response.content_part.added",
             "response.output_text.delta", "response.output_text.done", "response.content_part.done",
             "response.output_item.done", types[-1]]
    missing = [t for t in order if t not in types]
    assert not missing, f"{flow}: missing events {missing}: {types}"
    firsts = [types.index(t) for t in order]
    assert firsts == sorted(firsts), f"{flow}: events out of order: {types}"
    assert set(types) <= set(order) | {"response.in_progress"}, f"{flow}: unexpected events: {set(types) - set(order)}"
    sequence = [e.sequence_number for e in events]
    assert sequence == list(range(sequence[0], sequence[0] + len(events))), f"{flow}: sequence_number: {sequence}"

    created = events[0].response
    assert created.status == "in_progress" and created.output == [], f"{flow}: {created}"
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "message" and added.item.content == [], f"{flow}: {added}"
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert all(d.item_id == added.item.id and d.output_index == 0 and d.content_index == 0 for d in deltas), f"{flow}"
    text = "".join(d.delta for d in deltas)
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == text, f"{flow}: output_text.done {done.text!r} vs deltas {text!r}"
    final = events[-1].response
    assert final.status == types[-1].split(".")[1], f"{flow}: {types[-1]} with status {final.status}"
    check_response(final, 16, flow)
    assert final.id == created.id and final.output_text == text == whole.output_text, \
        f"{flow}: streamed {text!r}, final {final.output_text!r}, whole {whole.output_text!r}"


class Challenge(BaseModel):
    title: str = Field(min_length=1, max_length=12)
    category: Literal["ZERO_WASTE", "PLOGGING", "VEGAN"]
    points: int = Field(ge=0, le=100)
    done: bool


def test_responses_stream_helper_accumulates_a_parsed_response(openai_client, model):
    # The SDK's `responses.stream()` helper needs `response.completed`; a grammar-bounded answer
    # always completes.
    flow = "responses.stream(text_format=Challenge)"
    with openai_client.responses.stream(model=model, input="Describe a challenge as JSON.", text_format=Challenge,
                                        max_output_tokens=300, **GREEDY) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed", f"{flow}: {final.status} {final.incomplete_details}"
    assert "".join(deltas) == final.output_text, f"{flow}"
    assert isinstance(final.output_parsed, Challenge), f"{flow}: {final.output_parsed!r}"


def test_responses_store_previous_response_id_and_retrieve(openai_client, model):
    flow = "responses.create(store=True) then previous_response_id, responses.retrieve"
    first = respond(openai_client, model, input="My favourite colour is green. Remember it.", store=True,
                    max_output_tokens=8)
    follow = respond(openai_client, model, input="What is my favourite colour?", previous_response_id=first.id,
                     store=True, max_output_tokens=8)
    alone = respond(openai_client, model, input="What is my favourite colour?", store=False, max_output_tokens=8)
    check_response(follow, 8, flow)
    assert follow.previous_response_id == first.id, f"{flow}: {follow.previous_response_id}"
    assert follow.usage.input_tokens > alone.usage.input_tokens + 5, \
        f"{flow}: the earlier turn did not reach the prompt: {follow.usage.input_tokens} vs {alone.usage.input_tokens}"

    got = openai_client.responses.retrieve(first.id)
    assert got.id == first.id and got.status == first.status, f"{flow}: {got}"
    assert got.output_text == first.output_text, f"{flow}: {got.output_text!r} vs {first.output_text!r}"
    assert got.usage.output_tokens == first.usage.output_tokens, f"{flow}: {got.usage}"


def test_responses_not_stored_cannot_be_retrieved(openai_client, model):
    flow = "responses.create(store=False) then retrieve"
    r = respond(openai_client, model, input=QUESTION, store=False, max_output_tokens=4)
    with pytest.raises(openai.NotFoundError) as err:
        openai_client.responses.retrieve(r.id)
    assert err.value.status_code == 404, f"{flow}: {err.value}"


def test_responses_retrieve_of_a_missing_id_is_not_found(openai_client):
    flow = "responses.retrieve(missing id)"
    missing = "resp_0000000000000000000000000000000000000000"
    with pytest.raises(openai.NotFoundError) as err:
        openai_client.responses.retrieve(missing)
    assert err.value.status_code == 404, f"{flow}"
    body = err.value.response.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"]), \
        f"{flow}: OpenAI's error shape: {body}"
    assert missing in err.value.message, f"{flow}: the message names the id: {err.value.message}"


def test_responses_previous_response_id_that_does_not_exist_is_refused(openai_client, model):
    flow = "responses.create(previous_response_id=missing)"
    with pytest.raises((openai.BadRequestError, openai.NotFoundError)) as err:
        respond(openai_client, model, input="Hello", previous_response_id="resp_missing0000", max_output_tokens=4)
    assert err.value.param == "previous_response_id", f"{flow}: {err.value.body}"


def check_function_calls(response, flow, names=None):
    calls = function_calls(response)
    assert calls, f"{flow}: no function_call item in {response.output}"
    for call in calls:
        assert call.call_id and call.name in (names or SCHEMAS), f"{flow}: {call}"
        validate(parse_json(call.arguments, flow), SCHEMAS[call.name], flow)
        assert call.status in (None, "completed"), f"{flow}: {call}"
    assert len({c.call_id for c in calls}) == len(calls), f"{flow}: call ids repeat"
    assert response.status == "completed", f"{flow}: {response.status} {response.incomplete_details}"
    return calls


@pytest.mark.tool_calls
def test_responses_required_function_call_then_function_call_output(openai_client, model):
    flow = "responses.create(tools, tool_choice=required) -> function_call_output"
    conversation = [{"role": "user", "content": "What's the weather in Seoul?"}]
    first = respond(openai_client, model, input=conversation, tools=TOOLS, tool_choice="required", max_output_tokens=200)
    calls = check_function_calls(first, flow)

    # As OpenAI's function-calling guide: the output items go back as input, then one
    # function_call_output per call.
    conversation += first.output
    for call in calls:
        conversation.append({"type": "function_call_output", "call_id": call.call_id,
                             "output": json.dumps({"temperature": 3, "sky": "clear"})})
    final = respond(openai_client, model, input=conversation, tools=TOOLS, tool_choice="none", max_output_tokens=16)
    check_response(final, 16, flow)
    assert not function_calls(final), f"{flow}: tool_choice none, yet a call: {final.output}"
    alone = respond(openai_client, model, input=conversation[:1], tools=TOOLS, tool_choice="none", max_output_tokens=1)
    assert final.usage.input_tokens > alone.usage.input_tokens + 5, f"{flow}: the call and its output reached the prompt"


@pytest.mark.tool_calls
def test_responses_function_call_output_after_previous_response_id(openai_client, model):
    flow = "responses.create(store) function_call -> previous_response_id + function_call_output"
    first = respond(openai_client, model, input="What's the weather in Seoul?", tools=TOOLS, store=True,
                    tool_choice={"type": "function", "name": "get_weather"}, parallel_tool_calls=False,
                    max_output_tokens=200)
    calls = check_function_calls(first, flow, names={"get_weather"})
    assert len(calls) == 1, f"{flow}: parallel_tool_calls=False: {calls}"
    final = respond(openai_client, model, previous_response_id=first.id, tools=TOOLS, tool_choice="none",
                    max_output_tokens=16,
                    input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"}])
    check_response(final, 16, flow)
    alone = respond(openai_client, model, input="What's the weather in Seoul?", tools=TOOLS, tool_choice="none",
                    max_output_tokens=1)
    assert final.usage.input_tokens > alone.usage.input_tokens + 5, f"{flow}: the stored turn reached the prompt"


@pytest.mark.tool_calls
def test_responses_streamed_function_call_arguments(openai_client, model):
    flow = "responses.create(stream=True, tool_choice=required)"
    events = list(respond(openai_client, model, input="What's the weather in Seoul?", tools=TOOLS,
                          tool_choice="required", max_output_tokens=200, stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed", f"{flow}: {types}"
    added = [e for e in events if e.type == "response.output_item.added" and e.item.type == "function_call"]
    assert added, f"{flow}: no function_call item added: {types}"
    final_calls = {c.id: c for c in function_calls(events[-1].response)}
    for event in added:
        item = event.item
        assert item.id and item.call_id and item.name in SCHEMAS, f"{flow}: {item}"
        deltas = [e.delta for e in events
                  if e.type == "response.function_call_arguments.delta" and e.item_id == item.id]
        done = [e for e in events if e.type == "response.function_call_arguments.done" and e.item_id == item.id]
        assert len(done) == 1 and done[0].arguments == "".join(deltas), f"{flow}: {done} vs {deltas}"
        item_done = [e.item for e in events if e.type == "response.output_item.done" and e.item.id == item.id]
        assert len(item_done) == 1 and item_done[0].arguments == done[0].arguments, f"{flow}: {item_done}"
        validate(parse_json(done[0].arguments, flow), SCHEMAS[item.name], flow)
        assert final_calls[item.id].arguments == done[0].arguments, f"{flow}: response.completed differs"


def test_responses_json_schema_text_format_is_valid_json(openai_client, model):
    flow = "responses.create(text.format=json_schema)"
    r = respond(openai_client, model, input="Describe a challenge as JSON.", max_output_tokens=300,
                text={"format": {"type": "json_schema", "name": "challenge", "schema": CHALLENGE_SCHEMA, "strict": True}})
    check_response(r, 300, flow)
    assert r.status == "completed", f"{flow}: did not finish within 300 tokens: {r.output_text!r}"
    validate(parse_json(r.output_text, flow), CHALLENGE_SCHEMA, flow)


def test_responses_parse_with_a_pydantic_text_format(openai_client, model):
    flow = "responses.parse(text_format=Challenge)"
    r = openai_client.responses.parse(model=model, input="Describe a challenge as JSON.", text_format=Challenge,
                                      max_output_tokens=300, **GREEDY)
    assert isinstance(r.output_parsed, Challenge), f"{flow}: {r.output_parsed!r} from {r.output_text!r}"


class GetWeather(BaseModel):
    """The weather of a city."""

    city: str = Field(max_length=12)
    unit: Literal["celsius", "fahrenheit"]
    days: int = Field(ge=1, le=7)


@pytest.mark.tool_calls
def test_responses_parse_with_a_named_pydantic_function_tool(openai_client, model):
    flow = "responses.parse(tools=[pydantic_function_tool], tool_choice=named)"
    r = openai_client.responses.parse(model=model, input="What's the weather in Seoul?",
                                      tools=[openai.pydantic_function_tool(GetWeather)],
                                      tool_choice={"type": "function", "name": "GetWeather"},
                                      max_output_tokens=200, **GREEDY)
    calls = function_calls(r)
    assert calls and all(c.name == "GetWeather" for c in calls), f"{flow}: {r.output}"
    assert isinstance(calls[0].parsed_arguments, GetWeather), f"{flow}: {calls[0]}"


def test_chat_completions_parse_with_a_pydantic_response_format(openai_client, model):
    flow = "chat.completions.parse(response_format=Challenge)"
    r = openai_client.chat.completions.parse(model=model, messages=user("Describe a challenge as JSON."),
                                             response_format=Challenge, max_tokens=300, **GREEDY)
    message = r.choices[0].message
    assert isinstance(message.parsed, Challenge), f"{flow}: {message.parsed!r} from {message.content!r}"


@pytest.mark.tool_calls
def test_chat_completions_parse_with_a_named_pydantic_function_tool(openai_client, model):
    flow = "chat.completions.parse(tools=[pydantic_function_tool], tool_choice=named)"
    r = openai_client.chat.completions.parse(model=model, messages=user("What's the weather in Seoul?"),
                                             tools=[openai.pydantic_function_tool(GetWeather)],
                                             tool_choice={"type": "function", "function": {"name": "GetWeather"}},
                                             max_tokens=200, **GREEDY)
    calls = r.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "GetWeather", f"{flow}: {r.choices[0]}"
    assert isinstance(calls[0].function.parsed_arguments, GetWeather), f"{flow}: {calls[0]}"


# ---- errors ----


def check_openai_error_body(err, flow):
    body = err.response.json()
    assert set(body) == {"error"}, f"{flow}: OpenAI's error shape is {{'error': {{...}}}}: {body}"
    assert {"message", "type", "param", "code"} <= set(body["error"]), f"{flow}: {body}"
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], f"{flow}: {body}"


def test_embeddings_are_refused_with_a_clear_bad_request(openai_client, model):
    flow = "embeddings.create"
    with pytest.raises(openai.BadRequestError) as err:
        openai_client.embeddings.create(model=model, input="hello")
    check_openai_error_body(err.value, flow)
    assert err.value.body["type"] == "invalid_request_error", f"{flow}: {err.value.body}"
    assert "embedding" in err.value.message.lower(), f"{flow}: the message says why: {err.value.message}"


@pytest.mark.parametrize("method", ["get", "post"])
def test_an_unknown_v1_path_is_not_found_in_openai_error_shape(openai_client, method):
    flow = f"{method.upper()} /v1/does-not-exist"
    with pytest.raises(openai.NotFoundError) as err:
        if method == "get":
            openai_client.get("/does-not-exist", cast_to=object)
        else:
            openai_client.post("/does-not-exist", cast_to=object, body={"model": "x"})
    assert err.value.status_code == 404, f"{flow}"
    check_openai_error_body(err.value, flow)
