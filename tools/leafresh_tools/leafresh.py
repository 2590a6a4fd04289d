"""The Leafresh request side: the endpoints' paths, the Korean query values the tools send, the
instruction and base-info messages (the prompt the base-info endpoint renders), the endpoint's
generation settings, and one read of an endpoint's event stream (`challenge` ... `close`)."""

import itertools
import json
import os
import re
import time
import urllib.parse

from . import ROOT, sse

BASE_INFO = "/ai/chatbot/recommendation/base-info"
FREE_TEXT = "/ai/chatbot/recommendation/free-text"

# Query values: every stream of a run gets its own combination, so no two prompts are the same
# beyond the instruction prefix they all share.
LOCATIONS = ["도시", "농촌", "바닷가", "산간 지역", "섬 마을"]
WORK_TYPES = ["사무직", "학생", "주부", "자영업", "현장직", "프리랜서"]
CATEGORIES = ["제로웨이스트", "플로깅", "탄소발자국", "에너지 절약",
              "업사이클", "문화 공유", "디지털 탄소", "비건"]

# The Leafresh prompt's texts, from the file our binary embeds (src/leafresh/prompt.json): every
# server gets exactly the prompt our endpoints render.
with open(os.path.join(ROOT, "src", "leafresh", "prompt.json"), encoding="utf-8") as _f:
    PROMPT = json.load(_f)
INSTRUCTION = "\n".join(PROMPT["instruction"])

# The follow-up question, framed as our free-text endpoint frames one (free_text_request).
FOLLOWUP_MESSAGE = "조금 더 쉽게 시작할 수 있는 챌린지도 알려 주세요"


def query_string(params):
    # quote, not quote_plus: %20 for spaces, as the Spring back end sends them.
    return urllib.parse.urlencode(params, quote_via=urllib.parse.quote)


def base_info_path(session, location, work_type, category):
    query = query_string({"sessionId": session, "location": location, "workType": work_type,
                          "category": category})
    return f"{BASE_INFO}?{query}"


def free_text_path(session, message):
    return f"{FREE_TEXT}?{query_string({'sessionId': session, 'message': message})}"


def _fill(template, **values):
    """`template` with each {name} replaced, as prompt.rs fills it (values are not searched)."""
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


def base_info_messages(location, work_type, category):
    request = _fill(PROMPT["base_info_request"], location=location, work_type=work_type,
                    category=category)
    return [{"role": "user", "content": INSTRUCTION + PROMPT["separator"] + request}]


def followup_messages(query, answer):
    """Turn 2 of a conversation: the base-info question, turn 1's answer, a follow-up question."""
    request = _fill(PROMPT["free_text_request"], category=query[2], message=FOLLOWUP_MESSAGE)
    return base_info_messages(*query) + [{"role": "assistant", "content": answer},
                                         {"role": "user", "content": request}]


def short_messages(i):
    """A short prompt for the decode and concurrency runs, different per stream."""
    loc = LOCATIONS[i % len(LOCATIONS)]
    work = WORK_TYPES[(i // len(LOCATIONS)) % len(WORK_TYPES)]
    return [{"role": "user", "content": f"{loc}에 사는 {work}를 위한 친환경 습관 #{i}을 길게 설명해 주세요."}]


class Queries:
    """Hands out (location, workType, category) triples, each once while unused ones remain, so
    that no two requests of a run share more than the instruction prefix."""

    def __init__(self):
        self.unused = list(itertools.product(LOCATIONS, WORK_TYPES, CATEGORIES))

    def next(self, category=None):
        for i, triple in enumerate(self.unused):
            if category is None or triple[2] == category:
                return self.unused.pop(i)
        # All used (a very long run): repeats from here on may hit a whole-prompt cache.
        self.__init__()
        return self.next(category)


def base_info_settings():
    """The base-info endpoint's generation settings, from the file our binary embeds."""
    with open(os.path.join(ROOT, "src", "leafresh", "constants.json"), encoding="utf-8") as f:
        return json.load(f)["generation_defaults"]["base_info"]


def base_info_sampling():
    """The base-info endpoint's sampling as /v1 request fields."""
    settings = base_info_settings()
    return {k: settings[k] for k in ("temperature", "top_p", "top_k", "repeat_penalty", "min_p")}


def stream_base_info(server, path, timeout, until_first_challenge=False):
    """One Leafresh event stream (base-info or free-text) read to its `close` or `error` event,
    or, with until_first_challenge, left at its first `challenge`. Returns the status, the time to
    the first challenge (ttft), how many challenge events came, the final event (end), how many
    challenges the `close` event's answer holds (answer_challenges), the seconds until the stream
    ended and an error (an `error` event's message)."""
    result = {"path": path, "status": None, "ttft": None, "challenges": 0, "end": None,
              "answer_challenges": None, "seconds": None, "error": None}
    started = time.monotonic()
    conn = server.connection(timeout)
    try:
        conn.request("GET", path, headers={"Accept": "text/event-stream"})
        resp = conn.getresponse()
        result["status"] = resp.status
        if resp.status != 200:
            result["error"] = f"HTTP {resp.status}: {resp.read(500).decode('utf-8', 'replace')}"
            return result
        for event, data in sse.events(resp):
            if event == "challenge":
                if result["ttft"] is None:
                    result["ttft"] = time.monotonic() - started
                result["challenges"] += 1
                if until_first_challenge:
                    break
            elif event in ("close", "error"):
                result["end"] = event
                if event == "error":
                    result["error"] = _error_message(data)
                else:
                    result["answer_challenges"] = _answer_challenges(data)
                break
    except OSError as e:
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        result["seconds"] = time.monotonic() - started
        conn.close()
    if result["error"] is None:
        if until_first_challenge and result["ttft"] is None:
            result["error"] = "stream ended before a challenge event"
        elif not until_first_challenge and result["end"] != "close":
            result["error"] = "stream ended without a close event"
    return result


def _answer_challenges(data):
    """How many challenges a `close` event's data holds (None when it is not an answer)."""
    try:
        return len(json.loads(data)["data"]["challenges"])
    except (ValueError, KeyError, TypeError):
        return None


def _error_message(data):
    """An `error` event's message (its data as it came when that is not the error envelope)."""
    try:
        return str(json.loads(data)["message"])
    except (ValueError, KeyError, TypeError):
        return data.strip()
