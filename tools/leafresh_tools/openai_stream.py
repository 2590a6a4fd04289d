"""One streamed chat completion on /v1/chat/completions, timed chunk by chunk, and what is
measured from it: tokens, time to first token, decode rate; n streams at once."""

import json
import time

from . import sse
from .leafresh import short_messages
from .measure import at_once

# The sampler fields of the synthetic-model runs: greedy, so that every server does the same work.
GREEDY = {"temperature": 0}


def stream_chat(server, messages, max_tokens, timeout, fields=None):
    """One streamed chat completion. `fields`: request fields besides the messages and the token
    limit (default GREEDY; {} sends none, leaving each server its defaults); the server's
    extra_body goes last. Returns timings, token counts (from `usage`) and the text."""
    body = {"model": server.model_id or "bench", "messages": messages, "stream": True, "max_tokens": max_tokens,
            "stream_options": {"include_usage": True}}
    body.update(GREEDY if fields is None else fields)
    body.update(server.extra_body)
    r = {"status": None, "ttft": None, "first": None, "last": None, "deltas": 0,
         "usage_tokens": None, "prompt_tokens": None, "cached_tokens": None, "seconds": None,
         "error": None, "finish": None, "text": "", "timings": None}
    pieces = []
    started = time.monotonic()
    conn = server.connection(timeout)
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
        resp = conn.getresponse()
        r["status"] = resp.status
        if resp.status != 200:
            r["error"] = f"HTTP {resp.status}: {resp.read(400).decode('utf-8', 'replace')}"
            return r
        for chunk in sse.json_chunks(resp):
            now = time.monotonic()
            if chunk.get("error"):
                r["error"] = str(chunk["error"])[:300]
            for choice in chunk.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    if r["first"] is None:
                        r["first"] = now
                        r["ttft"] = now - started
                    r["last"] = now
                    r["deltas"] += 1
                    pieces.append(content)
                if choice.get("finish_reason"):
                    r["finish"] = choice["finish_reason"]
            usage = chunk.get("usage")
            if usage and usage.get("completion_tokens") is not None:
                r["usage_tokens"] = usage["completion_tokens"]
                r["prompt_tokens"] = usage.get("prompt_tokens")
                cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
                if cached is not None:
                    r["cached_tokens"] = cached
            # llama-server's own account of the prompt tokens its slot cache served.
            timings = chunk.get("timings")
            if isinstance(timings, dict):
                r["timings"] = timings
                if r["cached_tokens"] is None:
                    r["cached_tokens"] = timings.get("cache_n")
    except OSError as e:
        r["error"] = f"{type(e).__name__}: {e}"
    finally:
        r["seconds"] = time.monotonic() - started
        r["text"] = "".join(pieces)
        conn.close()
    return r


def tokens_of(r):
    return r["usage_tokens"] if r["usage_tokens"] is not None else r["deltas"]


def first_token_seconds(r):
    """Time to the first content delta; a stream without one (it ended at once) counts its whole
    time, a failed one nothing."""
    if r["ttft"] is not None:
        return r["ttft"]
    return None if r["error"] else r["seconds"]


def decode_rate(r):
    """Tokens after the first over the time from the first to the last delta."""
    n = tokens_of(r)
    if r["first"] is None or r["last"] is None or r["last"] <= r["first"] or n < 2:
        return None
    return (n - 1) / (r["last"] - r["first"])


def concurrent(server, n, max_tokens, timeout, offset, fields=None):
    """n streams started at once (short prompts from `offset`); `fields` as in stream_chat."""
    results, wall = at_once([
        lambda i=i: stream_chat(server, short_messages(offset + i), max_tokens, timeout, fields)
        for i in range(n)])
    tokens = sum(tokens_of(r) for r in results)
    errors = [r["error"] for r in results if r["error"]]
    ok = n - len(errors)
    short = sum(1 for r in results if not r["error"] and tokens_of(r) < max_tokens)
    return {"tokens": tokens, "seconds": wall, "tps": tokens / wall if wall and ok == n else None,
            "errors": errors, "short": short}
