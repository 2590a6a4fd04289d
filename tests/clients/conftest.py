"""Shared fixtures of the client-library suite: the protocol endpoints of leafresh-llm driven by the
client libraries people use (openai, openai-agents, anthropic, langchain-openai, litellm,
instructor), each as its own documentation shows.

The server is given in the environment:

- LEAFRESH_BASE_URL       the server's root, e.g. http://127.0.0.1:8000 (no /v1). Unset: every
                          test is skipped. NOTE: the Rust glue that runs this suite refuses
                          skips (a skipped test looks like a passing one), so it must set it.
- LEAFRESH_MODEL          the model id to send (default "leafresh", the glue's --model-alias).
- LEAFRESH_API_KEY        optional; when set the server was started with `--api-key` and every
                          client sends it. The tests of the key itself (wrong key, x-api-key)
                          skip without it, so the glue should start the server with a key.
- LEAFRESH_REAL_WEIGHTS   "1" when the model has real weights (Gemma 3 270M); otherwise the model
                          is the tiny random one, whose text is gibberish, and the tests check
                          shapes, counts, determinism, grammar and errors only.
- LEAFRESH_HAS_FIM        "1" when the model has fill-in-the-middle tokens (neither test model
                          has), so /v1/completions accepts `suffix`.

No client retries (a retried 5xx would hide the first answer) and every client times out after
CLIENT_TIMEOUT seconds.
"""

import os

# Set before any test module imports litellm: at import it fetches a model-cost map from the
# internet (none here) and retries for several seconds; offline it uses the copy it ships.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The Agents SDK exports traces to OpenAI unless told not to (the tests also call
# set_tracing_disabled(True)).
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

import pytest  # noqa: E402

from client_helpers import CLIENT_TIMEOUT, NO_KEY  # noqa: E402


def _env(name):
    return os.environ.get(name, "").strip()


def pytest_configure(config):
    # Every model can be made to call (its own tool-call format, or the generic JSON one).
    config.addinivalue_line("markers", "tool_calls: the model must call a function")


@pytest.fixture(scope="session")
def base_url():
    """The server's root, without /v1."""
    value = _env("LEAFRESH_BASE_URL")
    if not value:
        pytest.skip("LEAFRESH_BASE_URL is not set (the Rust glue sets it; it refuses skips)")
    return value.rstrip("/")


@pytest.fixture(scope="session")
def v1_url(base_url):
    """The OpenAI-style base URL, `<root>/v1`."""
    return base_url + "/v1"


@pytest.fixture(scope="session")
def model():
    return _env("LEAFRESH_MODEL") or "leafresh"


@pytest.fixture(scope="session")
def configured_key():
    """The key the server requires, or None when it requires none."""
    return _env("LEAFRESH_API_KEY") or None


@pytest.fixture(scope="session")
def api_key(configured_key):
    """What every client sends: the configured key, or a placeholder the server ignores."""
    return configured_key or NO_KEY


@pytest.fixture(scope="session")
def required_key(configured_key):
    """For the tests of the key itself, which mean nothing when the server needs none."""
    if configured_key is None:
        pytest.skip("LEAFRESH_API_KEY is not set: the server requires no key (the glue should set one)")
    return configured_key


@pytest.fixture(scope="session")
def real_weights():
    return _env("LEAFRESH_REAL_WEIGHTS") == "1"


@pytest.fixture(scope="session")
def has_fim():
    return _env("LEAFRESH_HAS_FIM") == "1"


@pytest.fixture(scope="session")
def openai_client(v1_url, api_key):
    from openai import OpenAI

    return OpenAI(base_url=v1_url, api_key=api_key, max_retries=0, timeout=CLIENT_TIMEOUT)
