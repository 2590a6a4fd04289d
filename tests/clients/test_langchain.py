"""LangChain's `ChatOpenAI` (langchain-openai) against the server, as its docs show for
OpenAI-compatible servers: `ChatOpenAI(model=..., base_url="<root>/v1", api_key=...)`, then
`invoke`, `stream`, `with_structured_output(method="json_schema" | "function_calling")`,
`bind_tools(tool_choice=...)`, and the same over the Responses API (`use_responses_api=True`).

What LangChain sends: chat requests carry `max_completion_tokens` (not `max_tokens`);
`with_structured_output(method="json_schema")` goes through `chat.completions.parse`
(response_format json_schema, strict) or `responses.parse`; `method="function_calling"` binds the
schema as a tool with tool_choice naming it and `parallel_tool_calls: false`.
"""

import json
import operator
from functools import reduce
from typing import Literal

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from client_helpers import CLIENT_TIMEOUT, validate

QUESTION = "Suggest one eco-friendly challenge for the office."
WEATHER_QUESTION = "What's the weather in Seoul?"


class GetWeather(BaseModel):
    """Get the current weather of a city."""

    city: str = Field(max_length=12, description="The city")
    unit: Literal["celsius", "fahrenheit"]
    days: int = Field(ge=1, le=7)


class CurrentTime(BaseModel):
    """Get the current time."""


class Challenge(BaseModel):
    """An eco-friendly challenge."""

    title: str = Field(min_length=1, max_length=12)
    category: Literal["ZERO_WASTE", "PLOGGING", "VEGAN"]
    points: int = Field(ge=0, le=100)
    done: bool


SCHEMAS = {"GetWeather": GetWeather.model_json_schema(), "CurrentTime": CurrentTime.model_json_schema()}


@pytest.fixture(scope="module", params=[False, True], ids=["chat-completions", "responses"])
def use_responses_api(request):
    return request.param


def chat(v1_url, api_key, model, **params):
    return ChatOpenAI(model=model, base_url=v1_url, api_key=api_key, max_retries=0, timeout=CLIENT_TIMEOUT,
                      temperature=0, **params)


def check_usage(message, max_tokens, flow):
    usage = message.usage_metadata
    assert usage and usage["input_tokens"] > 0, f"{flow}: {usage}"
    assert 0 < usage["output_tokens"] <= max_tokens, f"{flow}: {usage}"
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"], f"{flow}: {usage}"


def test_chat_openai_invoke(v1_url, api_key, model, use_responses_api, real_weights):
    flow = f"ChatOpenAI(use_responses_api={use_responses_api}).invoke"
    llm = chat(v1_url, api_key, model, max_tokens=16, use_responses_api=use_responses_api)
    message = llm.invoke(QUESTION)
    assert isinstance(message, AIMessage), f"{flow}: {message!r}"
    assert isinstance(message.text, str), f"{flow}: {message!r}"
    assert not message.tool_calls, f"{flow}: {message.tool_calls}"
    check_usage(message, 16, flow)
    metadata = message.response_metadata
    if use_responses_api:
        assert metadata["id"].startswith("resp_"), f"{flow}: {metadata}"
        assert metadata["status"] in ("completed", "incomplete"), f"{flow}: {metadata}"
        assert [b["type"] for b in message.content] == ["text"], f"{flow}: {message.content}"
    else:
        assert metadata["finish_reason"] in ("stop", "length"), f"{flow}: {metadata}"
        assert isinstance(message.content, str), f"{flow}: {message.content!r}"
    if real_weights:
        assert message.text.strip(), f"{flow}: empty text"


def test_chat_openai_stream_adds_up_to_the_invoke_answer(v1_url, api_key, model, use_responses_api):
    flow = f"ChatOpenAI(use_responses_api={use_responses_api}).stream"
    llm = chat(v1_url, api_key, model, max_tokens=16, use_responses_api=use_responses_api, stream_usage=True)
    whole = llm.invoke(QUESTION)
    chunks = list(llm.stream(QUESTION))
    assert len(chunks) > 1, f"{flow}: {chunks}"
    streamed = reduce(operator.add, chunks)
    assert streamed.text == whole.text, f"{flow}: streamed {streamed.text!r} vs {whole.text!r}"
    check_usage(streamed, 16, flow)
    assert streamed.usage_metadata["output_tokens"] == whole.usage_metadata["output_tokens"], f"{flow}"


def test_with_structured_output_json_schema(v1_url, api_key, model, use_responses_api):
    flow = f"with_structured_output(method=json_schema), use_responses_api={use_responses_api}"
    llm = chat(v1_url, api_key, model, max_tokens=300, use_responses_api=use_responses_api)
    result = llm.with_structured_output(Challenge, method="json_schema", include_raw=True).invoke(
        "Describe a challenge as JSON.")
    assert result["parsing_error"] is None, f"{flow}: {result['parsing_error']} in {result['raw']!r}"
    assert isinstance(result["parsed"], Challenge), f"{flow}: {result!r}"


@pytest.mark.tool_calls
def test_with_structured_output_function_calling(v1_url, api_key, model, use_responses_api):
    flow = f"with_structured_output(method=function_calling), use_responses_api={use_responses_api}"
    llm = chat(v1_url, api_key, model, max_tokens=300, use_responses_api=use_responses_api)
    result = llm.with_structured_output(Challenge, method="function_calling", include_raw=True).invoke(
        "Describe a challenge.")
    assert result["parsing_error"] is None, f"{flow}: {result['parsing_error']} in {result['raw']!r}"
    assert isinstance(result["parsed"], Challenge), f"{flow}: {result!r}"
    assert result["raw"].tool_calls[0]["name"] == "Challenge", f"{flow}: {result['raw'].tool_calls}"


def check_tool_calls(message, flow, names=None):
    assert message.tool_calls, f"{flow}: no tool calls: {message!r}"
    assert not message.invalid_tool_calls, f"{flow}: {message.invalid_tool_calls}"
    for call in message.tool_calls:
        assert call["id"] and call["name"] in (names or SCHEMAS), f"{flow}: {call}"
        validate(call["args"], SCHEMAS[call["name"]], flow)


@pytest.mark.tool_calls
@pytest.mark.parametrize("tool_choice", ["required", "GetWeather"])
def test_bind_tools_calls_with_valid_arguments(v1_url, api_key, model, use_responses_api, tool_choice):
    flow = f"bind_tools(tool_choice={tool_choice!r}), use_responses_api={use_responses_api}"
    llm = chat(v1_url, api_key, model, max_tokens=200, use_responses_api=use_responses_api)
    message = llm.bind_tools([GetWeather, CurrentTime], tool_choice=tool_choice).invoke(WEATHER_QUESTION)
    check_tool_calls(message, flow, names={"GetWeather"} if tool_choice == "GetWeather" else None)


@pytest.mark.tool_calls
def test_bind_tools_streamed_tool_call_chunks_add_up(v1_url, api_key, model, use_responses_api):
    flow = f"bind_tools(tool_choice=GetWeather).stream, use_responses_api={use_responses_api}"
    llm = chat(v1_url, api_key, model, max_tokens=200, use_responses_api=use_responses_api)
    bound = llm.bind_tools([GetWeather, CurrentTime], tool_choice="GetWeather")
    streamed = reduce(operator.add, list(bound.stream(WEATHER_QUESTION)))
    check_tool_calls(streamed, flow, names={"GetWeather"})
    whole = bound.invoke(WEATHER_QUESTION)
    assert [c["args"] for c in streamed.tool_calls] == [c["args"] for c in whole.tool_calls], f"{flow}"


@pytest.mark.tool_calls
def test_tool_message_round_trip(v1_url, api_key, model, use_responses_api):
    flow = f"AIMessage(tool_calls) + ToolMessage -> answer, use_responses_api={use_responses_api}"
    llm = chat(v1_url, api_key, model, max_tokens=200, use_responses_api=use_responses_api)
    history = [HumanMessage(WEATHER_QUESTION)]
    ai = llm.bind_tools([GetWeather], tool_choice="GetWeather").invoke(history)
    check_tool_calls(ai, flow, names={"GetWeather"})
    history.append(ai)
    for call in ai.tool_calls:
        history.append(ToolMessage(json.dumps({"temperature": 3, "sky": "clear"}), tool_call_id=call["id"]))
    final = chat(v1_url, api_key, model, max_tokens=16, use_responses_api=use_responses_api).bind_tools(
        [GetWeather], tool_choice="none").invoke(history)
    assert not final.tool_calls, f"{flow}: tool_choice none: {final.tool_calls}"
    check_usage(final, 16, flow)
    alone = chat(v1_url, api_key, model, max_tokens=1, use_responses_api=use_responses_api).bind_tools(
        [GetWeather], tool_choice="none").invoke(history[:1])
    assert final.usage_metadata["input_tokens"] > alone.usage_metadata["input_tokens"] + 5, \
        f"{flow}: the call and its result reached the prompt"
