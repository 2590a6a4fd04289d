"""BENCHMARKS.md: the header, the common text every script's run rewrites ("How it was
measured", the profile's findings, how to reproduce), and merging one section into the file.
scripts/bench, bench-fast-forward, bench-warm-start and check-upstream-llama-server each write
their own section (`<!-- bench-section:NAME -->` ... `<!-- /bench-section:NAME -->`)."""

import re

HEADER = """# Benchmarks

leafresh-llm side by side with llama.cpp's `llama-server` (the reference) and llama-cpp-python's
server (the Python stack the original chatbot lived in), on the same synthetic GGUF, threads,
context, prompts and max tokens, in one run, each server alone on the machine in turn (issue 6). Ratios are
**ours / peer**: above 1 is better for speeds, below 1 is better for times and memory.
Each model has its own section; `scripts/bench` rewrites the section of the model it ran.
"""


def common_text():
    out = ["## How it was measured", ""]
    out.append("- Decode: one stream at a time, `POST /v1/chat/completions` with `stream: true`, "
               "`stream_options.include_usage`, a short Korean prompt, the fixed max_tokens; rate = "
               "(completion tokens from `usage` - 1) / (time of last content delta - time of first).")
    out.append("- Time to first token: the Leafresh instruction + a base-info request (the prompt our "
               "base-info endpoint renders, ~300-400 tokens) as one user message to every server's "
               "`/v1/chat/completions`; cold = the first request after start, warm = the next ones "
               "(same instruction prefix, other location/work type). llama-server reuses a slot's "
               "prompt cache (`cache_prompt`, on by default); llama-cpp-python its single-sequence cache.")
    out.append("- Aggregate: N streams started at once with different short prompts; tokens from "
               "`usage` summed over the wall time until the last stream ended.")
    out.append("- Peak RSS: `VmHWM` of `/proc/PID/status` at the end (weights are memory-mapped and "
               "count once touched). Start to ready: process start until `/health` answers 200 "
               "(llama-cpp-python: `/v1/models`); the model file was read into the page cache first.")
    out.append("- Spread: half the interquartile range of a figure's runs over its median. A ratio "
               "against llama-server below 1.0 by less than the larger spread of the two servers is "
               "reported as a tie: this machine cannot tell the two apart in that run.")
    out.append("- Grammar: Leafresh base-info requests (JSON grammar) and the same prompt on `/v1` "
               "(no grammar, max_tokens 512), decode tokens/s from our `request finished` log lines.")
    out += ["", "## What the profile showed, and what changed (issue 6, part 5)", ""]
    out.append("`scripts/profile-decode` samples one 200-token stream of each server with "
               "`perf record -e cpu-clock` (these VMs have no hardware counters; valgrind 3.19 "
               "cannot run AVX-512 code). On the 1B Q4_K_M shape, 2 threads, ours spent 98.7% of "
               "its CPU samples in ggml's kernels and the OpenMP runtime "
               "(`ggml_gemv_q4_K_8x8_q8_K` 62%, `ggml_vec_dot_q6_K_q8_K` 25%, OpenMP barriers 7%) "
               "and 1.5% in everything else: sampling (`llama_sampler_sample` 0.06%), tokio, "
               "actix, SSE framing and the kernel's network path. llama-server: 98.1% and 2.2%. "
               "The token loop has nothing left to win; what differed was how llama.cpp itself "
               "was compiled.")
    out.append("")
    out.append("- **-O2 instead of -O3.** llama-cpp-sys-2 builds llama.cpp as CMake "
               "`RelWithDebInfo` (-O2) whenever the Rust profile carries debug info, and our "
               "release profile keeps line tables. The peers build `Release` (-O3). "
               "`.cargo/config.toml` now sets `LLAMA_LIB_PROFILE=Release`. On the 1B Q4_K_M "
               "quick run this moved aggregate throughput at 8 streams from 0.84x to 1.05x "
               "llama-server, and single-stream decode from 0.94x to 1.00x (the batched k-quant "
               "matrix kernels gain most).")
    out.append("- **Measuring one server at a time.** The first runs kept all three servers alive "
               "and alternated requests; an idle server's OpenMP workers still spin after each "
               "request, and on 2 cores that moved rates by several percent (llama-cpp-python "
               "once beat llama-bench). Each round now starts each server alone.")
    out.append("- **Sampler order and batch sizes** were already as llama.cpp's server has them "
               "(grammar checked on the chosen token first, one batch for all slots, 512-token "
               "prompt chunks); the grammar costs nothing measurable (see the grammar figure).")
    out += ["", "## Reproduce", "", "```sh",
            "cargo build --release",
            "scripts/setup-peers                                   # llama-server, llama-bench, llama-cpp-python",
            "apt-get install -y sysbench                           # memory bandwidth (optional)",
            "scripts/bench --quick                                 # 1B shape, < 10 minutes",
            "scripts/bench --preset mistral-7b                     # the full run",
            "scripts/bench --preset gemma-270m                     # real weights vs llama-server, < 10 minutes",
            "```", "",
            "A missing bench model is made first (`scripts/make-test-model --preset P --quantize "
            "q4_k_m --check target/bench-models/P-q4_k_m.gguf`: F16 random weights quantized to "
            "Q4_K_M by llama.cpp's `llama_model_quantize`; the 7B one needs 14.5 GB of free disk "
            "for a few minutes).", "", "```sh",
            "scripts/bench --model /path/to/any.gguf               # any GGUF, e.g. the real Mistral file",
            "scripts/bench --from-json target/bench/last.json      # re-render a saved run",
            "scripts/bench --from-json target/bench/last-gemma.json # ... of the real-weights preset",
            "scripts/profile-decode                                # where the CPU time goes (perf)",
            "scripts/check-upstream-llama-server                   # a gateway in front of llama-server",
            "scripts/bench-warm-start [--preset mistral-7b]        # the first request after a start",
            "scripts/bench-fast-forward [--preset mistral-7b]      # grammar fast-forward vs llama-server",
            "scripts/bench-steps                                   # a decode step: llama_decode vs host",
            "```", ""]
    return "\n".join(out)


def merge_report(path, section):
    """BENCHMARKS.md with this section (`<!-- bench-section:NAME -->` ... its end marker) replaced
    in place, or added before the common text; everything else (other models' sections, the GPU
    check, other scripts' sections) kept as it is, and the common text rewritten."""
    name = re.match(r"<!-- bench-section:(.*?) -->", section).group(1)
    try:
        with open(path, encoding="utf-8") as f:
            old = f.read()
    except OSError:
        return HEADER + "\n" + section + "\n\n" + common_text()
    marker = re.escape(name)
    pattern = re.compile(rf"<!-- bench-section:{marker} -->.*?<!-- /bench-section:{marker} -->", re.S)
    common = "## How it was measured"
    if pattern.search(old):
        body = pattern.sub(lambda _: section, old, count=1)
    else:
        at = old.find(common)
        at = at if at >= 0 else len(old)
        body = old[:at].rstrip() + "\n\n" + section + "\n\n" + old[at:]
    at = body.find(common)
    return (body[:at] if at >= 0 else body.rstrip() + "\n\n") + common_text()
