"""The shared code of the Python tools under scripts/ (stdlib only; no install: each script puts
tools/ on sys.path and imports what it needs).

  sse            one server-sent-events reader: (event, data) pairs, OpenAI JSON chunks
  server         one server launcher: start, wait for readiness, log, VmHWM, stop; free_port
  paths          where things are: the repository, our binary, the benchmark peers
  models         the bench models, the real-weights model, GGUF metadata, end-of-generation ids
  real_model     fetching and assembling the real-weights model (scripts/real-model)
  leafresh       the Leafresh request side: base-info and free-text paths, Korean query lists,
                 the instruction and base-info messages, the endpoint's settings, its SSE streams
  answer         the answer's shape ported from src/leafresh/prompt.rs: bounds and JSON schema
  openai_stream  one streamed /v1 chat completion and what is measured from it; n at once
  llama_server   llama-server given the base-info task: its prompt count, the answer schema
  service_log    what our log lines say: `request finished` records, decode-step trace lines
  measure        medians, spreads, ratios, number formatting, calls started at once
  benchmarks_md  BENCHMARKS.md: its header, common text, and merging a section into it
"""

import os
import sys

# The repository: tools/leafresh_tools/ lies two levels below it.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def log(message):
    """A progress line on stderr, at once."""
    print(message, file=sys.stderr, flush=True)
