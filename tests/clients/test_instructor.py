"""instructor over the official OpenAI client, as its README shows:
`instructor.from_openai(OpenAI(base_url="<root>/v1", ...), mode=...)` then
`client.chat.completions.create(response_model=Model, messages=...)`.

Mode.JSON_SCHEMA sends `response_format: {"type": "json_schema", "json_schema": {"name": <class
name>, "schema": <model_json_schema()>}}` (no `strict`). The default Mode.TOOLS sends one function
tool named after the class (no `strict`) and `tool_choice: {"type": "function", "function":
{"name": <class name>}}`, then reads `choices[0].message.tool_calls[0].function.arguments`. Both
refuse `finish_reason: "length"` (IncompleteOutputException). `max_retries=0`: one attempt.
"""

from typing import Literal

import instructor
import pytest
from pydantic import BaseModel, Field

from client_helpers import parse_json

QUESTION = "Describe one eco-friendly challenge for the office."


class Challenge(BaseModel):
    """An eco-friendly challenge."""

    title: str = Field(min_length=1, max_length=12)
    category: Literal["ZERO_WASTE", "PLOGGING", "VEGAN"]
    points: int = Field(ge=0, le=100)
    done: bool


@pytest.mark.parametrize(
    "mode",
    [instructor.Mode.JSON_SCHEMA, pytest.param(instructor.Mode.TOOLS, marks=pytest.mark.tool_calls)],
    ids=["JSON_SCHEMA", "TOOLS"],
)
def test_instructor_create_returns_a_valid_model(openai_client, model, mode):
    flow = f"instructor.from_openai(mode={mode.name}).chat.completions.create(response_model=Challenge)"
    client = instructor.from_openai(openai_client, mode=mode)
    challenge, completion = client.chat.completions.create_with_completion(
        model=model,
        response_model=Challenge,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=300,
        temperature=0,
        max_retries=0,
    )
    assert isinstance(challenge, Challenge), f"{flow}: {challenge!r}"
    message = completion.choices[0].message
    if mode == instructor.Mode.TOOLS:
        calls = message.tool_calls
        assert calls and calls[0].function.name == "Challenge", f"{flow}: {message}"
        assert parse_json(calls[0].function.arguments, flow) == challenge.model_dump(), f"{flow}: {calls[0]}"
    else:
        assert parse_json(message.content, flow) == challenge.model_dump(), f"{flow}: {message.content!r}"


@pytest.mark.tool_calls
def test_instructor_default_mode_is_tools(openai_client, model):
    flow = "instructor.from_openai(client) default mode"
    client = instructor.from_openai(openai_client)
    assert client.mode == instructor.Mode.TOOLS, f"{flow}: {client.mode}"
    challenge = client.chat.completions.create(model=model, response_model=Challenge, max_tokens=300, temperature=0,
                                               max_retries=0, messages=[{"role": "user", "content": QUESTION}])
    assert isinstance(challenge, Challenge), f"{flow}: {challenge!r}"
