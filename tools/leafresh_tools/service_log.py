"""What our service's log says: the `request finished` line each request ends with (JSON or text
log format), and the engine's per-step `decode step` trace lines."""

import json
import re

# A decode step's trace line: tokens in the step, microseconds inside llama_decode and on the host.
STEP = re.compile(r"decode step tokens=(\d+) decode_us=(\d+) host_us=(\d+)")
# RUST_LOG for the step trace lines and the rest of the log as usual: the scheduler's module in
# the engine crate, and where builds before the crate split (a peer in a before/after) had it.
STEP_LOG = ("info,leafresh_engine::llama::scheduler=trace,"
            "leafresh_llm::engine::llama::scheduler=trace")


def finished_requests(path):
    """The fields of every `request finished` line of a JSON-format log, in order (endpoint,
    prompt_tokens, completion_tokens, cached_tokens, forced_tokens, tokens_per_second, ...)."""
    records = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if "request finished" not in line:
                    continue
                try:
                    fields = json.loads(line).get("fields") or {}
                except (ValueError, AttributeError):
                    continue
                if isinstance(fields, dict) and fields.get("message") == "request finished":
                    records.append(fields)
    except OSError:
        pass
    return records


def logged_values(path, endpoint, field):
    """The integer `field` of each `request finished` line of `endpoint` in a text-format log."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return [int(v) for v in re.findall(rf'endpoint="{re.escape(endpoint)}".*?\b{field}=(\d+)',
                                           f.read())]


def decode_steps(lines):
    """(tokens, decode_us, host_us) of each `decode step` trace line among lines."""
    return [tuple(map(int, m.groups())) for m in map(STEP.search, lines) if m]
