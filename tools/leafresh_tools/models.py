"""The models the tools run on: the synthetic bench models, the real-weights model, and what
their GGUF metadata says (end-of-generation tokens)."""

import os
import struct

from . import ROOT, real_model

# The bench models: real shapes, random weights, quantized to Q4_K_M by llama.cpp (like the real
# Mistral-7B-Instruct Q4_K_M file); scripts/bench makes a missing one.
PRESETS = {
    "1b": os.path.join(ROOT, "target", "bench-models", "1b-q4_k_m.gguf"),
    "mistral-7b": os.path.join(ROOT, "target", "bench-models", "mistral-7b-q4_k_m.gguf"),
}

# Token texts llama.cpp's vocabulary loader marks as end of generation besides the file's
# eos/eot/eom ids (src/llama-vocab.cpp in llama-cpp-sys-2's llama.cpp).
EOG_TEXTS = frozenset([
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~["])


def real_model_path():
    """The real-weights model (scripts/real-model's file), fetched and assembled if missing."""
    return real_model.ensure()


GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
                12: "d"}


def gguf_metadata(path):
    """The key/value metadata of a GGUF file (format 2 or 3), string and number arrays included."""
    with open(path, "rb") as f:
        def read(fmt):
            fmt = "<" + fmt
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def text():
            return f.read(read("Q")).decode("utf-8", errors="replace")

        def value(kind):
            if kind == 8:
                return text()
            if kind != 9:
                return read(GGUF_SCALARS[kind])
            item, n = read("I"), read("Q")
            if item == 8:
                return [text() for _ in range(n)]
            if item not in GGUF_SCALARS:
                raise ValueError(f"{path}: GGUF array of type {item} not supported here")
            fmt = f"<{n}{GGUF_SCALARS[item]}"
            return list(struct.unpack(fmt, f.read(struct.calcsize(fmt))))

        magic, version, _tensors, count = struct.unpack("<4sIQQ", f.read(24))
        if magic != b"GGUF" or version < 2:
            raise ValueError(f"{path}: not a GGUF file of format 2 or later")
        return {text(): value(read("I")) for _ in range(count)}


def end_of_generation_ids(path):
    """The token ids llama.cpp ends a generation on for this model (what ignore_eos bans)."""
    meta = gguf_metadata(path)
    ids = {meta.get(f"tokenizer.ggml.{k}_token_id") for k in ("eos", "eot", "eom")} - {None}
    tokens = meta.get("tokenizer.ggml.tokens") or []
    return sorted(ids | {i for i, t in enumerate(tokens) if t in EOG_TEXTS})
