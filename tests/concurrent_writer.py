"""Concurrency-test child: one of several processes recording into the same store at once.

    python tests/concurrent_writer.py STORE_PATH WRITER N_RECORDS LARGE_SHARE

    python tests/concurrent_writer.py STORE_PATH WRITER N_UNDOS undo

It prints "ready", waits for a line on stdin (so that all writers start together), then records N_RECORDS
decisions as fast as it can and prints "ok <i>" after each `record()` returns (or, with "undo", calls
`undo("student")` N_UNDOS times and prints "undid <pair_id or None>" after each). Decision i of writer w has
pair_id "w<w>-<i>", annotator "writer<w>" and response_a = "w<w>-<i> " * settings["k"]: with probability
LARGE_SHARE a record of 0.2-2 MB (a long write that another process can see half done), else a few bytes.
Like crash_writer.py it loads rlhf_kit/preferences.py by path, so it starts in milliseconds.
tests/test_preferences_concurrent.py runs two and four of these.
"""

import importlib.util
import random
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "preferences", Path(__file__).resolve().parents[1] / "rlhf_kit" / "preferences.py")
preferences = importlib.util.module_from_spec(spec)
spec.loader.exec_module(preferences)

path, writer, n, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
store = preferences.PreferenceStore(path)
rng = random.Random(writer)
print("ready", flush=True)
sys.stdin.readline()
if mode == "undo":
    for _ in range(n):
        undone = store.undo("student")
        print(f"undid {undone['pair_id'] if undone else None}", flush=True)
    sys.exit()
large_share, n_records = float(mode), n
for i in range(n_records):
    word = f"w{writer}-{i} "
    size = rng.randint(200_000, 2_000_000) if rng.random() < large_share else rng.randint(1, 200)
    k = max(1, size // len(word))
    store.record(f"w{writer}-{i}", f"writer {writer} decision {i}", word * k, "B", preferences.CHOICES[i % 4],
                 f"writer{writer}", {"k": k})
    print(f"ok {i}", flush=True)
