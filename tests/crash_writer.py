"""Crash-test child: records decisions into a store as fast as it can and prints "ok <i>" after each returns.

    python tests/crash_writer.py STORE_PATH TRIAL

Decision i of trial t has pair_id "t<t>-<i>", response_a = "<t>-<i> " * settings["k"] (k from 1 to 40000, so
some writes take long enough to be cut by the kill) and response_b = "B". It loads rlhf_kit/preferences.py by
path (standard library only), so it starts in milliseconds instead of importing the whole package.
tests/test_preferences_crash.py SIGKILLs it at a random moment.
"""

import importlib.util
import random
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "preferences", Path(__file__).resolve().parents[1] / "rlhf_kit" / "preferences.py")
preferences = importlib.util.module_from_spec(spec)
spec.loader.exec_module(preferences)

path, trial = sys.argv[1], int(sys.argv[2])
store = preferences.PreferenceStore(path)
rng = random.Random(trial)
print("ready", flush=True)
for i in range(10 ** 9):
    k = rng.randint(5000, 40000) if rng.random() < 1 / 16 else rng.randint(1, 40)
    store.record(f"t{trial}-{i}", f"trial {trial} decision {i}", f"{trial}-{i} " * k, "B",
                 preferences.CHOICES[i % 4], "student", {"k": k, "temperature": 1.0})
    print(f"ok {i}", flush=True)
