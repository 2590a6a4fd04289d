"""The answer's shape, as src/leafresh/prompt.rs builds it: the token budget decides the string
bounds (AnswerBounds::fitting), and the bounds the JSON schema (answer_schema). Ported here so
that llama-server gets the schema our grammar enforces for the same prompt and budget."""

import json

ANSWER_LITERALS = ['{"recommend": ', ', "challenges": [', ", ", ", ", "]}"]
ITEM_LITERALS = ['{"title": ', ', "description": ', "}"]
ANSWER_MIN = {"recommend": 10, "title": 5, "description": 10}
ANSWER_MAX = {"recommend": 100, "title": 30, "description": 120}
TOKENS_PER_CHAR = 3  # worst case: a byte-fallback tokenizer, 3 UTF-8 bytes per character
CHALLENGES = 3


def answer_fixed_tokens():
    """Tokens of everything but content characters: one per byte of the fixed text, two quotes
    per string, the end-of-generation token (prompt.rs fixed_tokens)."""
    item = sum(len(s) for s in ITEM_LITERALS) + 2 * 2
    return sum(len(s) for s in ANSWER_LITERALS) + 2 + CHALLENGES * item + 1


def answer_chars(b):
    return b["recommend"] + CHALLENGES * (b["title"] + b["description"])


def answer_bounds(max_new_tokens):
    """AnswerBounds::fitting: the largest string bounds whose worst case fits the budget, shared
    about 20% recommend, 20% titles, 60% descriptions; None when not even the minimum fits."""
    if max_new_tokens < answer_fixed_tokens():
        return None
    budget = (max_new_tokens - answer_fixed_tokens()) // TOKENS_PER_CHAR
    lo, hi = ANSWER_MIN, ANSWER_MAX
    if budget < answer_chars(lo):
        return None
    shares = {"recommend": budget // 5, "title": budget // 15, "description": budget // 5}
    b = {k: min(max(v, lo[k]), hi[k]) for k, v in shares.items()}
    while answer_chars(b) > budget:  # minimums may overshoot a small budget
        k = "description" if b["description"] > lo["description"] else "recommend"
        b[k] -= 1
    while True:  # capped shares leave budget over
        left = budget - answer_chars(b)
        if b["description"] < hi["description"] and left >= CHALLENGES:
            b["description"] += 1
        elif b["title"] < hi["title"] and left >= CHALLENGES:
            b["title"] += 1
        elif b["recommend"] < hi["recommend"] and left >= 1:
            b["recommend"] += 1
        else:
            return b


def answer_schema(b):
    """answer_schema: properties in the answer's order (llama.cpp's schema-to-grammar keeps the
    order it is given, and our grammar writes recommend first, title before description)."""
    def string(n):
        return {"type": "string", "minLength": 1, "maxLength": n}
    item = {"type": "object",
            "properties": {"title": string(b["title"]), "description": string(b["description"])},
            "required": ["title", "description"], "additionalProperties": False}
    return {"type": "object",
            "properties": {"recommend": string(b["recommend"]),
                           "challenges": {"type": "array", "minItems": CHALLENGES,
                                          "maxItems": CHALLENGES, "items": item}},
            "required": ["recommend", "challenges"], "additionalProperties": False}


def is_answer(text):
    """Whether text is a complete answer: a recommendation and three titled challenges."""
    try:
        v = json.loads(text)
        items = v["challenges"]
        return (bool(str(v["recommend"]).strip()) and len(items) == CHALLENGES
                and all(str(c["title"]).strip() and str(c["description"]).strip() for c in items))
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
