"""The Anthropic Messages API (POST /v1/messages, /v1/messages/count_tokens) driven by the official
`anthropic` package as its README shows: `Anthropic(base_url=<server root>, api_key=...)`,
`messages.create`, `messages.stream` (text_stream, get_final_message), tools with
`input_schema` and `tool_choice`, `messages.count_tokens`, and the SDK's error classes.

This SDK version sends the key as `Authorization: Bearer <key>` (not `x-api-key`) with
`anthropic-version: 2026-10-21`; it has no temperature/top_p/top_k arguments any more, so they go
in `extra_body`. Stream events are read only when they carry an SSE `event:` name.
"""

import json

import anthropic
import pytest

from client_helpers import CLIENT_TIMEOUT, WEATHER_SCHEMA, parse_json, pick_stop, validate

GREEDY = {"extra_body": {"temperature": 0}}
QUESTION = "Suggest one eco-friendly challenge for the office."
SYSTEM = "You are a helpful assistant. Answer in one sentence."
WEATHER_TOOL = {"name": "get_weather", "description": "The weather of a city", "input_schema": WEATHER_SCHEMA}
CLOCK_TOOL = {"name": "now", "description": "The time",
              "input_schema": {"type": "object", "properties": {}, "additionalProperties": False}}
TOOLS = [WEATHER_TOOL, CLOCK_TOOL]
SCHEMAS = {t["name"]: t["input_schema"] for t in TOOLS}


@pytest.fixture(scope="module")
def client(base_url, api_key):
    return anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=CLIENT_TIMEOUT)


def user(text):
    return [{"role": "user", "content": text}]


def create(client, model, **params):
    return client.messages.create(model=model, **{**GREEDY, **params})


def text_of(message):
    return "".join(block.text for block in message.content if block.type == "text")


def check_message(message, max_tokens, flow):
    assert message.type == "message" and message.role == "assistant", f"{flow}: {message}"
    assert message.id and message.model, f"{flow}: {message}"
    assert message.stop_reason in ("end_turn", "max_tokens", "stop_sequence", "tool_use"), f"{flow}: {message}"
    assert message.usage.input_tokens > 0, f"{flow}: {message.usage}"
    assert 0 < message.usage.output_tokens <= max_tokens, f"{flow}: {message.usage}"
    if message.stop_reason == "max_tokens":
        assert message.usage.output_tokens == max_tokens, f"{flow}: {message.usage}"
    if message.stop_reason != "stop_sequence":
        assert message.stop_sequence is None, f"{flow}: {message}"


def test_messages_create_with_a_system_prompt(client, model, real_weights):
    flow = "messages.create(system, messages)"
    message = create(client, model, system=SYSTEM, messages=user(QUESTION), max_tokens=16)
    check_message(message, 16, flow)
    assert [b.type for b in message.content] == ["text"], f"{flow}: {message.content}"
    assert message.stop_reason in ("end_turn", "max_tokens"), f"{flow}: {message.stop_reason}"
    if real_weights:
        assert text_of(message).strip(), f"{flow}: empty text"


def test_messages_text_blocks_are_the_same_prompt_as_a_string(client, model):
    flow = "messages.create(content=[text blocks])"
    as_string = create(client, model, system=SYSTEM, messages=user(QUESTION), max_tokens=8)
    as_blocks = create(client, model, max_tokens=8, system=[{"type": "text", "text": SYSTEM}],
                       messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION}]}])
    assert as_blocks.usage.input_tokens == as_string.usage.input_tokens, f"{flow}: {as_blocks.usage}"
    assert text_of(as_blocks) == text_of(as_string), f"{flow}: greedy answers differ"


def test_messages_system_prompt_reaches_the_prompt(client, model):
    flow = "messages.create(system=...)"
    without = create(client, model, messages=user(QUESTION), max_tokens=1)
    with_system = create(client, model, system=SYSTEM, messages=user(QUESTION), max_tokens=1)
    assert with_system.usage.input_tokens > without.usage.input_tokens + 5, \
        f"{flow}: {with_system.usage.input_tokens} vs {without.usage.input_tokens}"


def test_messages_sampling_parameters_are_accepted(client, model):
    flow = "messages.create(temperature, top_p, top_k)"
    message = client.messages.create(model=model, messages=user(QUESTION), max_tokens=8,
                                     extra_body={"temperature": 0.8, "top_p": 0.9, "top_k": 40})
    check_message(message, 8, flow)


def test_messages_stop_sequences_cut_and_name_the_stop(client, model):
    flow = "messages.create(stop_sequences)"
    full = text_of(create(client, model, messages=user(QUESTION), max_tokens=48))
    picked = pick_stop(full)
    assert picked, f"{flow}: no usable stop string in the greedy text {full!r}"
    stop, at = picked
    message = create(client, model, messages=user(QUESTION), max_tokens=48, stop_sequences=["@@never@@", stop])
    check_message(message, 48, flow)
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == stop, f"{flow}: {message}"
    assert text_of(message) == full[:at], f"{flow}: stop {stop!r} in {full!r}: {text_of(message)!r}"


def test_messages_stream_text_stream_and_final_message(client, model):
    flow = "messages.stream: text_stream, get_final_message"
    whole = create(client, model, system=SYSTEM, messages=user(QUESTION), max_tokens=24)
    with client.messages.stream(model=model, system=SYSTEM, messages=user(QUESTION), max_tokens=24,
                                **GREEDY) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    check_message(final, 24, flow)
    assert text == text_of(final) == text_of(whole), f"{flow}: {text!r} / {text_of(final)!r} / {text_of(whole)!r}"
    assert final.stop_reason == whole.stop_reason, f"{flow}: {final.stop_reason} vs {whole.stop_reason}"
    assert (final.usage.input_tokens, final.usage.output_tokens) == \
        (whole.usage.input_tokens, whole.usage.output_tokens), f"{flow}: {final.usage} vs {whole.usage}"


def test_messages_raw_stream_events_come_in_order(client, model):
    flow = "messages.create(stream=True)"
    events = list(create(client, model, messages=user(QUESTION), max_tokens=16, stream=True))
    assert events, f"{flow}: no events (the SDK skips an SSE event that has no `event:` line)"
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[-1] == "message_stop", f"{flow}: {types}"
    assert types[1] == "content_block_start" and types[-3:-1] == ["content_block_stop", "message_delta"], \
        f"{flow}: {types}"
    assert set(types[2:-3]) <= {"content_block_delta"}, f"{flow}: {types}"
    start = events[0].message
    assert start.content == [] and start.stop_reason is None and start.usage.input_tokens > 0, f"{flow}: {start}"
    block = events[1]
    assert block.index == 0 and block.content_block.type == "text" and block.content_block.text == "", f"{flow}: {block}"
    assert all(e.index == 0 and e.delta.type == "text_delta" for e in events[2:-3]), f"{flow}"
    delta = events[-2]
    assert delta.delta.stop_reason in ("end_turn", "max_tokens"), f"{flow}: {delta}"
    assert 0 < delta.usage.output_tokens <= 16, f"{flow}: {delta.usage}"


def check_tool_use(message, flow, names=None):
    uses = [b for b in message.content if b.type == "tool_use"]
    assert uses, f"{flow}: no tool_use block in {message.content}"
    for use in uses:
        assert use.id and use.name in (names or SCHEMAS), f"{flow}: {use}"
        validate(use.input, SCHEMAS[use.name], flow)
    assert message.stop_reason == "tool_use", f"{flow}: {message.stop_reason}"
    assert len({u.id for u in uses}) == len(uses), f"{flow}: tool_use ids repeat"
    return uses


@pytest.mark.tool_calls
def test_messages_tool_round_trip(client, model):
    flow = "messages.create(tools, tool_choice=tool) -> tool_result -> final message"
    messages = user("What's the weather in Seoul?")
    first = create(client, model, messages=messages, tools=TOOLS, max_tokens=200,
                   tool_choice={"type": "tool", "name": "get_weather"})
    check_message(first, 200, flow)
    uses = check_tool_use(first, flow, names={"get_weather"})

    # As Anthropic's tool-use guide: the assistant's content back as it came, then a user turn of
    # tool_result blocks.
    messages.append({"role": "assistant", "content": first.content})
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": use.id, "content": json.dumps({"temperature": 3, "sky": "clear"})}
        for use in uses]})
    final = create(client, model, messages=messages, tools=TOOLS, tool_choice={"type": "none"}, max_tokens=16)
    check_message(final, 16, flow)
    assert [b.type for b in final.content] == ["text"], f"{flow}: tool_choice none: {final.content}"
    alone = create(client, model, messages=messages[:1], tools=TOOLS, tool_choice={"type": "none"}, max_tokens=1)
    assert final.usage.input_tokens > alone.usage.input_tokens + 5, f"{flow}: the tool_use and its result reached the prompt"


@pytest.mark.tool_calls
def test_messages_tool_choice_any_calls_a_tool(client, model):
    flow = "messages.create(tool_choice=any)"
    message = create(client, model, messages=user("What time is it?"), tools=TOOLS, max_tokens=200,
                     tool_choice={"type": "any", "disable_parallel_tool_use": True})
    check_message(message, 200, flow)
    assert len(check_tool_use(message, flow)) == 1, f"{flow}: disable_parallel_tool_use: {message.content}"


@pytest.mark.tool_calls
def test_messages_streamed_tool_use_input(client, model):
    flow = "messages.stream(tool_choice=tool)"
    with client.messages.stream(model=model, messages=user("What's the weather in Seoul?"), tools=TOOLS,
                                tool_choice={"type": "tool", "name": "get_weather"}, max_tokens=200,
                                **GREEDY) as stream:
        events = list(stream)
        final = stream.get_final_message()
    starts = [e for e in events if e.type == "content_block_start" and e.content_block.type == "tool_use"]
    assert starts and starts[0].content_block.input == {}, f"{flow}: a tool_use block starts with input {{}}: {starts}"
    partial = "".join(e.delta.partial_json for e in events
                      if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
                      and e.index == starts[0].index)
    uses = check_tool_use(final, flow, names={"get_weather"})
    assert parse_json(partial, flow) == uses[0].input, f"{flow}: input_json_delta {partial!r} vs {uses[0].input}"


@pytest.mark.tool_calls
def test_messages_count_tokens_matches_create(client, model):
    flow = "messages.count_tokens"
    counted = client.messages.count_tokens(model=model, system=SYSTEM, messages=user(QUESTION))
    created = create(client, model, system=SYSTEM, messages=user(QUESTION), max_tokens=1)
    assert counted.input_tokens == created.usage.input_tokens, f"{flow}: {counted} vs {created.usage}"
    with_tools = client.messages.count_tokens(model=model, system=SYSTEM, messages=user(QUESTION), tools=TOOLS)
    assert with_tools.input_tokens > counted.input_tokens, f"{flow}: the tools count: {with_tools} vs {counted}"


def check_anthropic_error(err, error_type, flow):
    body = err.response.json()
    assert body.get("type") == "error" and set(body["error"]) >= {"type", "message"}, \
        f"{flow}: Anthropic's error shape is {{'type': 'error', 'error': {{'type', 'message'}}}}: {body}"
    assert err.type == error_type and body["error"]["message"], f"{flow}: {body}"


@pytest.mark.parametrize(
    "params",
    [
        {"messages": [], "max_tokens": 8},
        {"messages": user(QUESTION), "max_tokens": 0},
        {"messages": [{"role": "assistant", "content": "hi"}, {"role": "tool", "content": "x"}], "max_tokens": 8},
    ],
    ids=["no-messages", "max_tokens-0", "unknown-role"],
)
def test_messages_invalid_request_is_a_bad_request_in_anthropic_shape(client, model, params):
    flow = f"messages.create({params})"
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model=model, **params)
    assert err.value.status_code == 400, f"{flow}"
    check_anthropic_error(err.value, "invalid_request_error", flow)


def test_messages_unknown_model_is_not_found_in_anthropic_shape(client):
    flow = "messages.create(model=unknown)"
    with pytest.raises(anthropic.NotFoundError) as err:
        client.messages.create(model="claude-no-such-model", messages=user(QUESTION), max_tokens=4)
    check_anthropic_error(err.value, "not_found_error", flow)


def test_x_api_key_is_accepted_like_the_bearer_key(base_url, model, required_key):
    flow = "x-api-key"
    client = anthropic.Anthropic(base_url=base_url, api_key=required_key, max_retries=0, timeout=CLIENT_TIMEOUT)
    # The SDK sends the key as a bearer token; send it the way older SDKs and curl examples do.
    only_x_api_key = {"Authorization": anthropic.Omit(), "x-api-key": required_key}
    message = create(client, model, messages=user(QUESTION), max_tokens=4, extra_headers=only_x_api_key)
    check_message(message, 4, flow)
    counted = client.messages.count_tokens(model=model, messages=user(QUESTION), extra_headers=only_x_api_key)
    assert counted.input_tokens > 0, f"{flow}: {counted}"

    for headers in ({"Authorization": anthropic.Omit(), "x-api-key": "wrong-key"},
                    {"Authorization": "Bearer wrong-key"},
                    {"Authorization": anthropic.Omit()}):
        with pytest.raises(anthropic.AuthenticationError) as err:
            create(client, model, messages=user(QUESTION), max_tokens=4, extra_headers=headers)
        check_anthropic_error(err.value, "authentication_error", f"{flow} {headers}")
