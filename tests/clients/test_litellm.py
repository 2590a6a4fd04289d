"""LiteLLM's `litellm.completion` against the server, as its provider docs show for
OpenAI-compatible servers: `model="openai/<model>"` with `api_base="<root>/v1"`, streamed and not,
and the vLLM provider `model="hosted_vllm/<model>"` (which also posts to `<api_base>/chat/completions`,
so its api_base carries /v1 too). No retries: `num_retries=0, max_retries=0`.

conftest.py sets LITELLM_LOCAL_MODEL_COST_MAP before litellm is imported: otherwise the import
fetches a price list from the internet.
"""


import litellm
import pytest

from client_helpers import CLIENT_TIMEOUT, WEATHER_SCHEMA, parse_json, validate

QUESTION = "Suggest one eco-friendly challenge for the office."
MESSAGES = [{"role": "user", "content": QUESTION}]
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "The weather of a city",
                                                 "parameters": WEATHER_SCHEMA}}


def complete(v1_url, api_key, model, provider="openai", **params):
    return litellm.completion(model=f"{provider}/{model}", api_base=v1_url, api_key=api_key, num_retries=0,
                              max_retries=0, timeout=CLIENT_TIMEOUT, **{"messages": MESSAGES, "temperature": 0,
                                                                        **params})


def check_response(r, max_tokens, flow):
    choice = r.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str), f"{flow}: {choice}"
    assert choice.finish_reason in ("stop", "length"), f"{flow}: {choice}"
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= max_tokens, f"{flow}: {r.usage}"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, f"{flow}: {r.usage}"


@pytest.mark.parametrize("provider", ["openai", "hosted_vllm"])
def test_litellm_completion(v1_url, api_key, model, provider, real_weights):
    flow = f"litellm.completion({provider}/)"
    r = complete(v1_url, api_key, model, provider, max_tokens=16, seed=7)
    check_response(r, 16, flow)
    if real_weights:
        assert r.choices[0].message.content.strip(), f"{flow}: empty text"


def test_litellm_providers_send_the_same_request(v1_url, api_key, model):
    flow = "litellm.completion(openai/) vs (hosted_vllm/)"
    answers = [complete(v1_url, api_key, model, provider, max_tokens=12) for provider in ("openai", "hosted_vllm")]
    assert answers[0].choices[0].message.content == answers[1].choices[0].message.content, f"{flow}: greedy answers differ"
    assert answers[0].usage.prompt_tokens == answers[1].usage.prompt_tokens, f"{flow}"


@pytest.mark.parametrize("provider", ["openai", "hosted_vllm"])
def test_litellm_stream_adds_up_to_the_whole_answer(v1_url, api_key, model, provider):
    flow = f"litellm.completion({provider}/, stream=True)"
    whole = complete(v1_url, api_key, model, provider, max_tokens=16)
    chunks = list(complete(v1_url, api_key, model, provider, max_tokens=16, stream=True,
                           stream_options={"include_usage": True}))
    assert len(chunks) > 1, f"{flow}: {chunks}"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content, f"{flow}: streamed {text!r} vs {whole.choices[0].message.content!r}"
    built = litellm.stream_chunk_builder(chunks, messages=MESSAGES)
    assert built.choices[0].message.content == text, f"{flow}: stream_chunk_builder"
    assert built.choices[0].finish_reason == whole.choices[0].finish_reason, f"{flow}: {built.choices[0]}"
    assert (built.usage.prompt_tokens, built.usage.completion_tokens) == \
        (whole.usage.prompt_tokens, whole.usage.completion_tokens), f"{flow}: {built.usage} vs {whole.usage}"


@pytest.mark.tool_calls
@pytest.mark.parametrize("provider", ["openai", "hosted_vllm"])
def test_litellm_required_tool_call(v1_url, api_key, model, provider):
    flow = f"litellm.completion({provider}/, tools, tool_choice=required)"
    r = complete(v1_url, api_key, model, provider, max_tokens=200, tools=[WEATHER_TOOL], tool_choice="required",
                 messages=[{"role": "user", "content": "What's the weather in Seoul?"}])
    calls = r.choices[0].message.tool_calls
    assert calls, f"{flow}: no tool calls: {r.choices[0]}"
    for call in calls:
        assert call.id and call.function.name == "get_weather", f"{flow}: {call}"
        validate(parse_json(call.function.arguments, flow), WEATHER_SCHEMA, flow)
    assert r.choices[0].finish_reason == "tool_calls", f"{flow}: {r.choices[0].finish_reason}"


def test_litellm_unknown_model_is_not_found(v1_url, api_key):
    flow = "litellm.completion(openai/unknown model)"
    with pytest.raises(litellm.NotFoundError) as err:
        litellm.completion(model="openai/gpt-no-such-model", api_base=v1_url, api_key=api_key, messages=MESSAGES,
                           max_tokens=4, num_retries=0, max_retries=0, timeout=CLIENT_TIMEOUT)
    assert err.value.status_code == 404, f"{flow}: {err.value}"
