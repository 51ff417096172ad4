"""Several processes record into one PreferenceStore file at once (two browser tabs of one student in the
classroom, a kernel and a script): every decision whose record() returned is loaded, and a reader loading
while they write sees only whole decisions, without mistaking a write in progress for a crash's debris.

The writers are tests/concurrent_writer.py processes; some of their records are 0.2-2 MB, so that a write takes
long enough for another process to find it half done.
"""

import json
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from rlhf_kit.preferences import PreferenceStore

WRITER = Path(__file__).with_name("concurrent_writer.py")


class Writers:
    """`n` writer processes started together, each run as `concurrent_writer.py path w count mode`;
    `lines[w]` holds every whole line writer w printed so far."""

    def __init__(self, path: Path, n: int, count: int, mode, logs: Path):
        self.procs, self.lines, self.readers = [], {w: [] for w in range(n)}, []
        for w in range(n):
            with open(logs / f"writer{w}.log", "w") as stderr:
                self.procs.append(subprocess.Popen(
                    [sys.executable, str(WRITER), str(path), str(w), str(count), str(mode)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True))
        self.logs = logs
        for w, proc in enumerate(self.procs):
            assert proc.stdout.readline() == "ready\n", f"writer {w} did not start:\n{self.log(w)}"
        for w, proc in enumerate(self.procs):
            self.readers.append(threading.Thread(target=self._read_acks, args=(w, proc), daemon=True))
            self.readers[-1].start()
        for proc in self.procs:   # go
            proc.stdin.write("go\n")
            proc.stdin.close()

    def _read_acks(self, w, proc):
        for line in proc.stdout:
            if line.endswith("\n"):
                self.lines[w].append(line[:-1])

    def log(self, w) -> str:
        return (self.logs / f"writer{w}.log").read_text()

    def running(self) -> bool:
        return any(proc.poll() is None for proc in self.procs)

    def acked_ids(self) -> set[str]:
        """The pair_ids of the decisions whose record() has returned so far."""
        return {f"w{w}-{line.split()[1]}" for w, lines in self.lines.items() for line in list(lines)
                if line.startswith("ok ")}

    def finish(self, timeout: float):
        deadline = time.monotonic() + timeout
        try:
            for w, proc in enumerate(self.procs):
                proc.wait(max(0.1, deadline - time.monotonic()))
                assert proc.returncode == 0, f"writer {w} failed:\n{self.log(w)}"
        finally:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            for thread in self.readers:
                thread.join()
            for proc in self.procs:
                proc.stdout.close()


def ids_on_disk(path: Path) -> set[str]:
    """The pair_ids of the lines that parse, for counting losses in a file that no longer loads."""
    ids = set()
    for line in path.read_bytes().split(b"\n"):
        try:
            ids.add(json.loads(line)["pair_id"])
        except (ValueError, KeyError, TypeError):
            pass
    return ids


def whole(decision) -> bool:
    """The decision is exactly what its writer recorded (nothing half-written was taken for a decision)."""
    return decision["response_a"] == f"{decision['pair_id']} " * decision["settings"]["k"]


@pytest.mark.parametrize("n_writers, n_records", [(2, 150), (4, 60)])
def test_concurrent_writers_lose_no_acknowledged_decision(tmp_path, n_writers, n_records):
    store = PreferenceStore(tmp_path / "student.jsonl")
    writers = Writers(store.path, n_writers, n_records, 0.25, logs=tmp_path)   # a quarter of 0.2-2 MB
    loads, reader_problems = 0, []
    try:
        while writers.running():   # read while they write: every load sees every decision acked before it
            acked_before = writers.acked_ids()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    decisions = store.load()
                except ValueError as e:
                    reader_problems.append(f"load {loads + 1} raised {e}")
                    decisions = []
            loads += 1
            loaded = {d["pair_id"] for d in decisions}
            reader_problems += [f"load {loads}: {w.message}" for w in caught]
            reader_problems += [f"load {loads} misses acknowledged {p}" for p in sorted(acked_before - loaded)]
            reader_problems += [f"load {loads} has a damaged {d['pair_id']}" for d in decisions if not whole(d)]
            time.sleep(0.05)
    finally:
        writers.finish(timeout=60)

    acked = writers.acked_ids()
    report = f"{n_writers} writers x {n_records} records: {len(acked)} acknowledged"
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # nobody crashed, so there is no torn line to warn about
        try:
            decisions = store.load()
        except (ValueError, UserWarning) as e:
            lost = len(acked - ids_on_disk(store.path))
            pytest.fail(f"{report}, {lost} of them missing from the lines that parse, and the file no longer "
                        f"loads: {e}")
    lost = sorted(acked - {d["pair_id"] for d in decisions})
    report += f", {len(lost)} lost, {loads} loads during the writes, {len(reader_problems)} reader problems"
    print(report)
    assert len(acked) == n_writers * n_records, report
    assert lost == [], f"{report}; lost {lost[:10]}"
    assert reader_problems == [], f"{report}: {reader_problems[:5]}"
    assert len(decisions) == len(acked) and all(whole(d) for d in decisions)
    assert store.path.read_bytes().endswith(b"\n")


@pytest.mark.parametrize("n_writers", [2, 4])
def test_concurrent_undos_undo_distinct_decisions(tmp_path, n_writers):
    """Reading the standing decisions and appending the undo is one step: two processes never undo the same
    decision (which would leave an undo with nothing to undo, a file that no longer loads)."""
    store = PreferenceStore(tmp_path / "student.jsonl")
    store.record("big", "p", "x " * 1_000_000, "y", "A", "someone else")   # slows every read down
    for i in range(120):
        store.record(f"p{i}", "p", f"a{i}", f"b{i}", "A", "student")
    writers = Writers(store.path, n_writers, 80 // n_writers, "undo", logs=tmp_path)
    writers.finish(timeout=60)
    undone = [line.split()[1] for lines in writers.lines.values() for line in lines]
    assert len(undone) == 80 and "None" not in undone
    assert len(set(undone)) == 80, f"undone twice: {sorted(p for p in set(undone) if undone.count(p) > 1)}"
    assert [d["pair_id"] for d in store.load()] == ["big"] + [f"p{i}" for i in range(40)]
