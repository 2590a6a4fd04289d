"""The OpenAI Agents SDK (`openai-agents`) with its default model, the Responses API
(`OpenAIResponsesModel` over POST /v1/responses), pointed at the server as its docs show for
other providers: `set_default_openai_client(AsyncOpenAI(base_url=...))`,
`set_tracing_disabled(True)`, then `Agent(...)` and `Runner.run(...)`.

A random model never stops by itself, and the Agents SDK raises on a response whose status is
`incomplete` (max_output_tokens reached). So the runs here end by construction: a tool call that
`tool_choice` forces (grammar-constrained) with `tool_use_behavior="stop_on_first_tool"`, or an
`output_type` (json_schema, grammar-constrained). The plain-text answer accepts either a completed
answer or the SDK's error for a cut one, which must name `max_output_tokens`.

LEAFRESH_MODEL must not contain "/" here: the SDK reads "prefix/name" as a provider prefix.
"""

import asyncio
from typing import Annotated, Literal

import pytest
from openai import AsyncOpenAI
from pydantic import BaseModel, Field

from agents import (
    Agent,
    ModelBehaviorError,
    ModelSettings,
    Runner,
    function_tool,
    set_default_openai_client,
    set_tracing_disabled,
)
from agents.items import MessageOutputItem, ToolCallItem, ToolCallOutputItem
from agents.models.multi_provider import MultiProvider
from agents.models.openai_responses import OpenAIResponsesModel

from client_helpers import CLIENT_TIMEOUT, WEATHER_SCHEMA, parse_json, validate

WEATHER_CALLS = []


@function_tool
def get_weather(
    city: Annotated[str, Field(max_length=12)],
    unit: Literal["celsius", "fahrenheit"],
    days: Annotated[int, Field(ge=1, le=7)],
) -> str:
    """Get the weather forecast of a city.

    Args:
        city: The city.
        unit: The temperature unit.
        days: How many days of forecast.
    """
    WEATHER_CALLS.append({"city": city, "unit": unit, "days": days})
    return f"Sunny in {city} for {days} days"


@function_tool
def current_time() -> str:
    """The current time."""
    return "12:00"


class Challenge(BaseModel):
    title: str = Field(min_length=1, max_length=12)
    category: Literal["ZERO_WASTE", "PLOGGING", "VEGAN"]
    points: int = Field(ge=0, le=100)
    done: bool


@pytest.fixture(autouse=True)
def agents_env(base_url, model):
    """Skips with the other tests when the server is not given; no trace export."""
    assert "/" not in model, "the Agents SDK reads 'prefix/name' as a provider prefix"
    set_tracing_disabled(True)
    WEATHER_CALLS.clear()


def run(v1_url, api_key, agent, prompt, streamed=False):
    """Runs `agent` in a fresh event loop with a fresh default client, as the SDK's docs set it
    up (a client made in another loop cannot be reused). Returns (result, stream events)."""

    async def go():
        client = AsyncOpenAI(base_url=v1_url, api_key=api_key, max_retries=0, timeout=CLIENT_TIMEOUT)
        set_default_openai_client(client, use_for_tracing=False)
        try:
            assert isinstance(MultiProvider().get_model(agent.model), OpenAIResponsesModel), \
                "the SDK's default model is the Responses API"
            if not streamed:
                return await Runner.run(agent, prompt), []
            result = Runner.run_streamed(agent, prompt)
            events = [event async for event in result.stream_events()]
            return result, events
        finally:
            await client.close()

    return asyncio.run(go())


def forced_tool_agent(model, tool_choice):
    return Agent(
        name="Weather",
        instructions="You answer questions about the weather with your tools.",
        model=model,
        tools=[get_weather, current_time],
        model_settings=ModelSettings(tool_choice=tool_choice, temperature=0, max_tokens=200),
        # One turn: the tool's output is the final output, so a random model terminates.
        tool_use_behavior="stop_on_first_tool",
    )


def check_tool_run(result, flow, names=("get_weather", "current_time")):
    calls = [item for item in result.new_items if isinstance(item, ToolCallItem)]
    outputs = [item for item in result.new_items if isinstance(item, ToolCallOutputItem)]
    assert calls and outputs, f"{flow}: no tool call and output among {result.new_items}"
    raw = calls[0].raw_item
    assert raw.type == "function_call" and raw.name in names and raw.call_id, f"{flow}: {raw}"
    if raw.name == "get_weather":
        validate(parse_json(raw.arguments, flow), WEATHER_SCHEMA, flow)
        assert WEATHER_CALLS == [parse_json(raw.arguments, flow)], f"{flow}: the tool ran with {WEATHER_CALLS}"
        assert result.final_output == f"Sunny in {WEATHER_CALLS[0]['city']} for {WEATHER_CALLS[0]['days']} days", \
            f"{flow}: stop_on_first_tool: the tool's output is the final output: {result.final_output!r}"
    else:
        assert result.final_output == "12:00", f"{flow}: {result.final_output!r}"
    assert outputs[0].raw_item["call_id"] == raw.call_id, f"{flow}: {outputs[0].raw_item}"
    assert len(result.raw_responses) == 1, f"{flow}: one model call: {len(result.raw_responses)}"
    response = result.raw_responses[0]
    assert response.response_id and response.response_id.startswith("resp_"), f"{flow}: {response.response_id}"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0, f"{flow}: {response.usage}"


@pytest.mark.tool_calls
def test_agent_calls_its_function_tool_when_tool_choice_is_required(v1_url, api_key, model):
    flow = "Agent(tools, ModelSettings(tool_choice=required)) + Runner.run"
    result, _ = run(v1_url, api_key, forced_tool_agent(model, "required"), "What's the weather in Seoul?")
    check_tool_run(result, flow)


@pytest.mark.tool_calls
def test_agent_calls_the_named_tool(v1_url, api_key, model):
    flow = "Agent(tools, ModelSettings(tool_choice='get_weather')) + Runner.run"
    result, _ = run(v1_url, api_key, forced_tool_agent(model, "get_weather"), "What's the time?")
    check_tool_run(result, flow, names=("get_weather",))


@pytest.mark.tool_calls
def test_agent_streamed_run_calls_the_tool(v1_url, api_key, model):
    flow = "Runner.run_streamed(tool_choice=required)"
    result, events = run(v1_url, api_key, forced_tool_agent(model, "required"), "What's the weather in Seoul?",
                         streamed=True)
    check_tool_run(result, flow)
    raw_types = [e.data.type for e in events if e.type == "raw_response_event"]
    assert raw_types[0] == "response.created" and "response.completed" in raw_types, f"{flow}: {raw_types}"
    assert "response.function_call_arguments.delta" in raw_types, f"{flow}: {raw_types}"
    item_events = [e.name for e in events if e.type == "run_item_stream_event"]
    assert "tool_called" in item_events and "tool_output" in item_events, f"{flow}: {item_events}"


def test_agent_with_an_output_type_returns_the_model(v1_url, api_key, model):
    flow = "Agent(output_type=Challenge) + Runner.run"
    agent = Agent(name="Planner", instructions="Describe one eco-friendly challenge.", model=model,
                  output_type=Challenge, model_settings=ModelSettings(temperature=0, max_tokens=300))
    result, _ = run(v1_url, api_key, agent, "Give me a challenge for this week.")
    assert isinstance(result.final_output, Challenge), f"{flow}: {result.final_output!r}"
    assert [type(i) for i in result.new_items] == [MessageOutputItem], f"{flow}: {result.new_items}"


def test_agent_plain_answer_is_completed_or_reported_as_cut(v1_url, api_key, model, real_weights):
    flow = "Agent() + Runner.run plain text"
    agent = Agent(name="Assistant", instructions="Answer in one short sentence.", model=model,
                  model_settings=ModelSettings(temperature=0, max_tokens=24))
    try:
        result, _ = run(v1_url, api_key, agent, "Suggest one eco-friendly challenge for the office.")
    except ModelBehaviorError as err:
        # The SDK refuses `status: incomplete`; its message quotes the response's details.
        message = str(err)
        assert "response.incomplete" in message and "max_output_tokens" in message, \
            f"{flow}: a cut answer must be status=incomplete, incomplete_details.reason=max_output_tokens: {message}"
        return
    assert isinstance(result.final_output, str), f"{flow}: {result.final_output!r}"
    assert [type(i) for i in result.new_items] == [MessageOutputItem], f"{flow}: {result.new_items}"
    if real_weights:
        assert result.final_output.strip(), f"{flow}: empty answer"
