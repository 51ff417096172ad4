"""SIGKILL a process in the middle of recording preferences, again and again: no acknowledged click is lost.

Every trial appends to the same file, so each writer also starts on whatever the previous kill left behind.
"""

import random
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from rlhf_kit.preferences import PreferenceStore

WRITER = Path(__file__).with_name("crash_writer.py")
TRIALS = 20


def run_and_kill(path: Path, trial: int, delay: float, log: Path) -> list[int]:
    """Start the writer, SIGKILL it `delay` seconds after it is ready; the i of every "ok i" it printed."""
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, str(WRITER), str(path), str(trial)], stdout=subprocess.PIPE,
                                stderr=stderr, text=True)
    try:
        assert proc.stdout.readline() == "ready\n", f"the writer did not start:\n{log.read_text()}"
        acked = []
        reader = threading.Thread(target=lambda: acked.extend(int(line.split()[1]) for line in proc.stdout
                                                              if line.endswith("\n")))
        reader.start()
        time.sleep(delay)
        assert proc.poll() is None, f"the writer stopped before it was killed:\n{log.read_text()}"
        proc.kill()   # SIGKILL on POSIX: no cleanup, no flushing
        proc.wait()
        reader.join()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    return acked


@pytest.mark.slow
def test_no_acknowledged_decision_is_lost_when_the_writer_is_killed(tmp_path):
    store = PreferenceStore(tmp_path / "student.jsonl")
    acked_ids, in_flight, lost, torn = set(), set(), [], 0
    for trial in range(TRIALS):
        delay = random.Random(trial).uniform(0.05, 0.5)
        acked = run_and_kill(store.path, trial, delay, tmp_path / f"writer{trial}.log")
        assert acked == list(range(len(acked)))
        acked_ids |= {f"t{trial}-{i}" for i in acked}
        in_flight.add(f"t{trial}-{len(acked)}")   # killed inside record(): may or may not have landed

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            decisions = store.load()
        assert len(caught) <= 1 and all("unfinished write left by a crash" in str(w.message) for w in caught)
        torn += len(caught)
        stored = {d["pair_id"] for d in decisions}
        lost += sorted(acked_ids - stored)
        assert stored - acked_ids <= in_flight
        for d in decisions:   # nothing half-written was taken for a decision
            assert d["response_a"] == f"{d['pair_id'][1:]} " * d["settings"]["k"]

    report = f"{TRIALS} kills, {len(acked_ids)} acknowledged decisions, {torn} torn last lines, {len(lost)} lost"
    print(report)
    assert lost == [], report
    assert len(acked_ids) > TRIALS, report

    with warnings.catch_warnings(record=True):   # a torn tail from the last kill is cut off here
        warnings.simplefilter("always")
        store.record("after", "p", "a", "b", "A", "student")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.load()[-1]["pair_id"] == "after"
