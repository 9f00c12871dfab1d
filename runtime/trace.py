"""Horovod timeline files as valid Chrome-trace JSON, whatever stopped the run.

    finalize_timeline("runs/x/horovod_timeline.json")   # -> number of events kept

Horovod writes its timeline as a JSON array of events, many to a line, and
closes it only when the timeline is stopped: a run killed, or stopped before
that, leaves it open, perhaps with its last event cut in half. chrome://tracing and Perfetto accept the
open form, but ``json.load`` and most tools do not. This keeps every complete
event, drops a cut-off last one, and closes the array. No TensorFlow, no
Horovod: it runs on the file alone (``python -m runtime.trace FILE`` repairs
a timeline left by an older run).
"""
import json
import sys

from runtime.files import atomic_write


def finalize_timeline(path):
    with open(path, encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    decoder, events = json.JSONDecoder(), []
    at = text.find("[") + 1
    while True:
        while at < len(text) and text[at] in " \t\r\n,":
            at += 1
        if at >= len(text) or text[at] == "]":
            break
        try:
            event, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            break  # the event a stopped writer left unfinished
        events.append(event)

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as out:
            out.write("[\n" + ",\n".join(json.dumps(e, separators=(",", ":")) for e in events) + "\n]\n")

    atomic_write(path, write)
    return len(events)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(f"{name}: {finalize_timeline(name)} events")
