"""llama-server given the base-info task: the prompt our base-info endpoint renders, the
endpoint's sampling and token budget, and the JSON schema our grammar enforces for that budget."""

from . import answer
from .leafresh import base_info_messages, base_info_sampling, base_info_settings
from .openai_stream import stream_chat


def llama_server_prompt_tokens(s, messages):
    """The prompt's token count by llama-server itself (its template, its tokenizer), or None."""
    try:
        status, rendered = s.post_json("/apply-template", {"messages": messages})
        if status != 200 or not isinstance(rendered, dict) or "prompt" not in rendered:
            return None
        status, tokens = s.post_json("/tokenize", {"content": rendered["prompt"],
                                                   "add_special": True, "parse_special": True})
    except OSError:
        return None
    if status != 200 or not isinstance(tokens, dict):
        return None
    return len(tokens.get("tokens") or [])


def llama_server_base_info(s, query, ctx_per_slot, timeout):
    """The base-info task on llama-server: the prompt our endpoint renders, our endpoint's
    sampling settings and token budget (max_tokens capped by what a slot's context leaves,
    the engine's budget.rs), and the JSON schema our grammar enforces for that budget as
    response_format; timed from the request to the end of the stream."""
    messages = base_info_messages(*query)
    prompt_tokens = llama_server_prompt_tokens(s, messages)
    if prompt_tokens is None:
        return {"seconds": None, "error": "llama-server could not count the prompt's tokens"}
    budget = min(base_info_settings()["max_tokens"], ctx_per_slot - prompt_tokens)
    bounds = answer.answer_bounds(budget)
    if bounds is None:
        return {"seconds": None, "error": f"no room for an answer ({budget} tokens)"}
    fields = base_info_sampling()
    fields["response_format"] = {"type": "json_schema", "json_schema": {
        "name": "leafresh_answer", "strict": True, "schema": answer.answer_schema(bounds)}}
    r = stream_chat(s, messages, budget, timeout, fields)
    return {"seconds": r["seconds"], "error": r["error"], "answer": answer.is_answer(r["text"]),
            "tokens": r["usage_tokens"], "prompt_tokens": r["prompt_tokens"] or prompt_tokens,
            "cached_tokens": r["cached_tokens"], "budget": budget, "bounds": bounds}
