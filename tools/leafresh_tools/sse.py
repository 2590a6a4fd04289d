"""One reader of server-sent events (text/event-stream): the Leafresh endpoints' `challenge`,
`close` and `error` events, and OpenAI's `data: {...}` chunks ending with `data: [DONE]`.

The source is anything with readline() (an http.client response, a file, io.BytesIO) or an
iterable of lines, bytes or text. Events are dispatched at the blank line that ends them (or at
the end of the input): `data` lines are joined with newlines, `event` names the event (None when
the event has no `event` line), comment lines (`:`) and other fields are passed over.
"""

import collections
import json

Event = collections.namedtuple("Event", "event data")


def _lines(source):
    if hasattr(source, "readline"):
        while True:
            line = source.readline()
            if not line:
                return
            yield line
    else:
        yield from source


def events(source):
    """Yields each event of the stream as Event(event, data) as soon as it is complete."""
    name, data = None, []
    for line in _lines(source):
        if isinstance(line, bytes):
            line = line.decode("utf-8", errors="replace")
        line = line.rstrip("\r\n")
        if not line:
            if data or name is not None:
                yield Event(name, "\n".join(data))
            name, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    if data or name is not None:
        yield Event(name, "\n".join(data))


def json_chunks(source, until_done=True):
    """The JSON values of an OpenAI stream's data, in order; data that is not JSON is passed
    over. `data: [DONE]` ends the stream (until_done), or is passed over too."""
    for event in events(source):
        data = event.data.strip()
        if data == "[DONE]":
            if until_done:
                return
            continue
        try:
            yield json.loads(data)
        except ValueError:
            continue
