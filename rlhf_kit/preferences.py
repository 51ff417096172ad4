"""Human preference labels: a crash-safe append-only store, import/export, and labeller agreement.

A learner labels pairs of responses ("A better / B better / tie / skip") in a notebook widget. Each click is
one JSON line appended to a file and fsynced before `PreferenceStore.record` returns, so an acknowledged click
survives the kernel (or the laptop) dying the next instant. The file is an event log that is only appended to:

    {"kind": "decision", "pair_id", "prompt", "response_a", "response_b", "choice", "annotator", "time", "settings"}
    {"kind": "undo", "pair_id", "annotator", "time"}

Several processes may write one file at once (two browser tabs of one student in the classroom): every
read-modify-append (record, undo, import_pairs, and the repair of a crash's torn last line) holds an exclusive
`fcntl.flock` on the file and `load` a shared one, so no process ever takes another's line in progress for
a crash's debris. Windows has no flock: there the file is written unlocked, safe for one process at a time.

`load` replays it into the effective decisions. Instructors pool students' files with `merge` and compare
labellers with `pairwise_agreement`, `cohens_kappa` / `kappa_between` and `majority_vote`; `agreement_panel`
compares one learner with the simulated labeller and the gold reward of `rlhf_kit.gold`. Those live in
`rlhf_kit.agreement` and are re-exported here; this module holds the store, `import_pairs` and `ranking_to_pairs`.

The module, like `rlhf_kit.agreement`, imports only the standard library (`datasets` is imported by `export`),
so recording is cheap.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import warnings
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

try:
    import fcntl
except ImportError:   # Windows: see _lock
    fcntl = None

if __package__:   # tests/crash_writer.py and concurrent_writer.py load this file alone, outside the package
    from .agreement import (  # noqa: F401  (re-exported)
        INSTRUCTGPT_AGREEMENT,
        agreement_panel,
        cohens_kappa,
        gold_agreement,
        kappa_between,
        majority_vote,
        merge,
        pairwise_agreement,
    )

CHOICES = ("A", "B", "tie", "skip")
PAIR_FIELDS = ("prompt", "chosen", "rejected")   # TRL's explicit-prompt preference format

_FIELDS = {"decision": ("pair_id", "prompt", "response_a", "response_b", "choice", "annotator"),
           "undo": ("pair_id", "annotator")}


def pair_id(prompt: str, response_a: str, response_b: str) -> str:
    """16 hex digits of sha256 over the JSON list [prompt, response_a, response_b]; swapping A and B changes it."""
    text = json.dumps([prompt, response_a, response_b], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _chosen_rejected(decision: dict) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) of an A or B decision."""
    a, b = decision["response_a"], decision["response_b"]
    return (decision["prompt"], *((a, b) if decision["choice"] == "A" else (b, a)))


# ---------------------------------------------------------------------------------------- the event log
def _lock(fd: int, exclusive: bool) -> None:
    """Wait for an advisory lock on the open file `fd`, released when it is closed (or its process dies).

    POSIX flock: writers take it exclusive for every read-modify-append (repair, undo, import, record), readers
    shared, so a reader never sees a line in the middle of being written and a writer never takes another
    writer's unfinished line for a crash's. Where there is no fcntl (Windows) nothing is locked: one process
    (one notebook kernel) per file is then safe, two writing the same file at once are not (warned once).
    """
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        return
    global _UNLOCKED_WARNED
    if exclusive and not _UNLOCKED_WARNED:
        _UNLOCKED_WARNED = True
        warnings.warn("this platform has no fcntl.flock, so preference files are written without a lock: "
                      "let only one process (one notebook kernel) write each file at a time", stacklevel=2)


_UNLOCKED_WARNED = False


@contextmanager
def _locked_for_writing(path: Path):
    """The log opened for appending (created if missing) under the exclusive lock; yields the raw file.

    Creating it also fsyncs its directory on POSIX, so the new file's directory entry is durable too.
    """
    created = not path.exists()
    with open(path, "a+b", buffering=0) as f:
        _lock(f.fileno(), exclusive=True)
        yield f
    if created and os.name == "posix":
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read_all(f) -> bytes:
    f.seek(0)
    return f.readall()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _repair_tail(f, path: Path) -> bytes:
    """Under the exclusive lock: make the log end with a newline before new lines go after it; returns the bytes
    to write before them (b"\n" or b"").

    A last line without its newline can only be left by a writer that died in the middle of a write: a live one
    holds the lock until its line is on disk. If the line parses (only the newline was lost) it is a decision
    and is completed; otherwise it is cut off with a warning, so that new lines never glue onto it. Those torn
    bytes, which no `record` call returned for and no process is writing, are the only ones ever removed.
    """
    size = f.seek(0, os.SEEK_END)
    if not size:
        return b""
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return b""
    content = _read_all(f)
    start = content.rfind(b"\n") + 1
    try:
        json.loads(content[start:].decode("utf-8"))
        return b"\n"
    except ValueError:
        line = content.count(b"\n") + 1
        warnings.warn(f"{path} line {line}: removed an unfinished line left by a crash during a write (no "
                      f"recorded click is lost)", stacklevel=5)
        os.ftruncate(f.fileno(), start)
        return b""


def _append_locked(f, path: Path, events: list[dict]) -> None:
    """Under the exclusive lock: append one JSON line per event in one write, flush and fsync, so the events
    are on disk when this returns. If anything fails on the way (a full disk, Ctrl-C) the file is cut back to
    where it ended, so a failed call leaves none of its lines behind."""
    data = b"".join(json.dumps(e, ensure_ascii=False).encode("utf-8") + b"\n" for e in events)
    data = _repair_tail(f, path) + data
    end = f.seek(0, os.SEEK_END)
    try:
        _write_all(f.fileno(), data)
        os.fsync(f.fileno())
    except BaseException:
        os.ftruncate(f.fileno(), end)
        raise


def _append(path: Path, events: list[dict]) -> None:
    """Append the events under the exclusive lock (see `_append_locked`)."""
    with _locked_for_writing(path) as f:
        _append_locked(f, path, events)


def _event_problem(event) -> str | None:
    """What is wrong with one parsed line, or None."""
    if not isinstance(event, dict):
        return f"expected a JSON object, got {type(event).__name__}"
    fields = _FIELDS.get(event.get("kind"))
    if fields is None:
        return f"'kind' is {event.get('kind')!r}, expected 'decision' or 'undo'"
    missing = [k for k in fields if not isinstance(event.get(k), str)]
    if missing:
        return f"this {event['kind']} has no string {', '.join(map(repr, missing))}"
    if event["kind"] == "decision" and event["choice"] not in CHOICES:
        return f"choice {event['choice']!r} is not one of {CHOICES}"
    return None


def _read_events(path: Path) -> list[tuple[int, dict]]:
    """(line number, event) for each line of the log, read under a shared lock (so never while a live process is
    in the middle of a write); see `PreferenceStore.load` for how bad lines are handled."""
    try:
        f = open(path, "rb", buffering=0)
    except FileNotFoundError:
        return []
    with f:
        _lock(f.fileno(), exclusive=False)
        return _parse_events(path, _read_all(f))


def _parse_events(path: Path, content: bytes) -> list[tuple[int, dict]]:
    """(line number, event) for each line of `content`, the bytes of the log at `path`.

    The last line may lack its newline: if it parses it is an event like any other (a crash took only the
    newline), otherwise it is a write torn by a crash, skipped with a warning. Any other bad line raises.
    """
    lines = content.split(b"\n")
    fix = "Fix or delete that line in a text editor; rlhf_kit left the file as it is."
    events = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line.decode("utf-8"))
        except ValueError as e:   # JSONDecodeError and UnicodeDecodeError
            if n == len(lines):   # after the last newline: a write torn by a crash
                warnings.warn(f"{path} line {n} is an unfinished write left by a crash; skipped it (it holds no "
                              f"recorded click, and the next record() removes it)", stacklevel=2)
                continue
            raise ValueError(f"{path} line {n} is not valid JSON ({e}). {fix}") from None
        problem = _event_problem(event)
        if problem:
            raise ValueError(f"{path} line {n}: {problem}. {fix}")
        events.append((n, event))
    return events


class PreferenceStore:
    """One labelling session's JSONL event log (see the module docstring); the file is created by the first write."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, pair_id: str, prompt: str, response_a: str, response_b: str, choice: str, annotator: str,
               settings: dict | None = None) -> dict:
        """Append one decision and fsync it before returning; returns the event written.

        settings: how the responses were sampled, e.g. {"model": "sft", "temperature": 0.7, "k": 2}.
        """
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {', '.join(map(repr, CHOICES))}; got {choice!r}")
        for name, value in (("pair_id", pair_id), ("annotator", annotator)):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        for name, value in (("prompt", prompt), ("response_a", response_a), ("response_b", response_b)):
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string, got {type(value).__name__}")
        settings = dict(settings or {})
        try:
            json.dumps(settings)
        except TypeError as e:
            raise ValueError(f"settings must hold only JSON values (numbers, strings, lists, dicts): {e}; "
                             f"convert e.g. a tensor with float(x)") from None
        event = {"kind": "decision", "pair_id": pair_id, "prompt": prompt, "response_a": response_a,
                 "response_b": response_b, "choice": choice, "annotator": annotator, "time": _now(),
                 "settings": settings}
        _append(self.path, [event])
        return event

    def _standing(self, events: list[tuple[int, dict]] | None = None) -> dict[str, list[tuple[int, dict]]]:
        """Per annotator, the (line, decision) not undone, in file order, of `events` (default: the file's). An
        undo removes that annotator's latest decision on the pair it names."""
        standing = {}
        for n, e in _read_events(self.path) if events is None else events:
            stack = standing.setdefault(e["annotator"], [])
            if e["kind"] == "decision":
                stack.append((n, e))
                continue
            for i in range(len(stack) - 1, -1, -1):
                if stack[i][1]["pair_id"] == e["pair_id"]:
                    del stack[i]
                    break
            else:
                raise ValueError(f"{self.path} line {n} undoes pair {e['pair_id']!r} of {e['annotator']!r}, who "
                                 f"has no decision on it before that line. Delete that line in a text editor.")
        return standing

    def undo(self, annotator: str) -> dict | None:
        """Append (and fsync) an undo of `annotator`'s latest standing decision and return that decision; None
        if they have nothing to undo. If it had re-labelled a pair, the pair's previous decision stands again.
        Reading and appending happen under one exclusive lock, so two processes undoing at once undo two
        different decisions, never the same one twice."""
        if not self.path.exists():
            return None
        with _locked_for_writing(self.path) as f:   # what is read is what is undone, whoever else writes
            stack = self._standing(_parse_events(self.path, _read_all(f))).get(annotator)
            if not stack:
                return None
            undone = stack[-1][1]
            _append_locked(f, self.path, [{"kind": "undo", "pair_id": undone["pair_id"], "annotator": annotator,
                                           "time": _now()}])
        return undone

    def load(self) -> list[dict]:
        """The effective decisions in file order: undos applied, and a later decision of the same annotator on
        the same pair_id replacing the earlier one. A missing file gives [].

        A last line without its newline that parses is a decision like any other (a crash took only the newline).
        A torn last line (a crash mid-write: no newline at the end and not valid JSON) is skipped with a warning;
        any other bad line raises ValueError naming the file and line. The file is read under a shared lock, so
        a line another process is writing at this moment is waited for, never taken for a torn one. The file is
        never modified here.
        """
        return self._effective()

    def _effective(self, events: list[tuple[int, dict]] | None = None) -> list[dict]:
        """`load`'s decisions, of `events` (default: the file's)."""
        latest = {}
        for stack in self._standing(events).values():
            for n, e in stack:
                latest[(e["annotator"], e["pair_id"])] = (n, e)
        return [e for _, e in sorted(latest.values(), key=lambda item: item[0])]

    def done_pair_ids(self, annotator: str) -> set[str]:
        """The pair_ids `annotator` has decided (skips included), to resume after a kernel restart."""
        return {d["pair_id"] for d in self.load() if d["annotator"] == annotator}

    def counts(self) -> dict:
        """{"A", "B", "tie", "skip", "total"}: effective decisions of all annotators."""
        c = Counter(d["choice"] for d in self.load())
        return {**{k: c[k] for k in CHOICES}, "total": sum(c.values())}

    def export(self):
        """(dataset, {"pairs", "ties", "skips"}): the A/B decisions as a `datasets.Dataset` with columns prompt,
        chosen, rejected, annotator, pair_id, and how many decisions went into it and how many ties and skips were
        left out (a tie or a skip says nothing about which response is better)."""
        from datasets import Dataset, Features, Value  # imported here: recording must not wait for it

        decisions = self.load()
        rows = []
        for d in decisions:
            if d["choice"] in ("A", "B"):
                prompt, chosen, rejected = _chosen_rejected(d)
                rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected,
                             "annotator": d["annotator"], "pair_id": d["pair_id"]})
        columns = (*PAIR_FIELDS, "annotator", "pair_id")
        dataset = Dataset.from_dict({k: [r[k] for r in rows] for k in columns},
                                    features=Features({k: Value("string") for k in columns}))
        c = Counter(d["choice"] for d in decisions)
        return dataset, {"pairs": len(rows), "ties": c["tie"], "skips": c["skip"]}


# ------------------------------------------------------------------------------------- importing pairs
def _read_rows(path: Path) -> list[tuple[int, object]]:
    """(row number, row) from a .jsonl file (row number = line number) or a .json list."""
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
            if line.strip():
                try:
                    rows.append((n, json.loads(line)))
                except ValueError as e:
                    raise ValueError(f"{path.name} line {n} is not valid JSON ({e}); expected one object per "
                                     f"line with {'/'.join(PAIR_FIELDS)}") from None
        return rows
    if path.suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise ValueError(f"{path.name} holds a {type(rows).__name__}; expected a list of objects with "
                             f"{'/'.join(PAIR_FIELDS)}")
        return list(enumerate(rows, start=1))
    raise ValueError(f"cannot import {path}: expected a .jsonl or .json file of {'/'.join(PAIR_FIELDS)} rows")


def _row_problem(row, label: str) -> str | None:
    expected = f"expected {'/'.join(PAIR_FIELDS)}"
    if not isinstance(row, dict):
        return f"{label} is a {type(row).__name__}; {expected} fields"
    for k in PAIR_FIELDS:
        if k not in row:
            return f"{label} has no {k!r} field (it has {', '.join(map(repr, row)) or 'none'}); {expected}"
        if not isinstance(row[k], str):
            return f"{label}: {k!r} is {row[k]!r}, expected a string"
        if not row[k].strip():
            return f"{label}: {k!r} is empty; {expected}, all non-empty"
    if row["chosen"] == row["rejected"]:
        return f"{label}: 'chosen' and 'rejected' are the same text; a preference needs two different responses"
    return None


def import_pairs(rows_or_path, store: PreferenceStore, annotator: str = "import") -> int:
    """Add existing preference pairs {"prompt", "chosen", "rejected"} (a list of dicts, or a .jsonl / .json
    file of them) to `store` as decisions with choice "A", response_a = chosen, response_b = rejected.

    All or nothing, and safe to run again:
      - every row is checked before anything is written: the first problem (a missing or empty field, a row
        repeated in the input) raises ValueError naming the row, and nothing is imported;
      - a row that already stands in the store (same prompt, chosen and rejected, whoever recorded it) is
        skipped, so importing the same file twice adds nothing the second time, and an import cut short (a
        crash mid-write keeps the rows before the torn one) is completed by running it again;
      - the new rows go in one write under the store's exclusive lock, read and append together; an error
        during the write removes the part already written.
    Returns the number of rows added.
    """
    if not isinstance(annotator, str) or not annotator.strip():
        raise ValueError(f"annotator must be a non-empty string, got {annotator!r}")
    source = Path(rows_or_path) if isinstance(rows_or_path, (str, os.PathLike)) else None
    numbered = _read_rows(source) if source else list(enumerate(rows_or_path, start=1))
    prefix = f"{source.name} " if source else ""

    first = {}   # (prompt, chosen, rejected) -> the row it was first seen in
    for n, row in numbered:
        label = f"{prefix}row {n}"
        problem = _row_problem(row, label)
        if problem:
            raise ValueError(problem)
        key = (row["prompt"], row["chosen"], row["rejected"])
        if key in first:
            raise ValueError(f"{label} duplicates row {first[key]} (same prompt, chosen and rejected); remove the "
                             f"duplicate")
        first[key] = n
    if not numbered:
        return 0

    settings = {"imported_from": str(source)} if source else {}
    with _locked_for_writing(store.path) as f:
        standing = {_chosen_rejected(d) for d in store._effective(_parse_events(store.path, _read_all(f)))
                    if d["choice"] in ("A", "B")}
        events = [{"kind": "decision", "pair_id": pair_id(r["prompt"], r["chosen"], r["rejected"]),
                   "prompt": r["prompt"], "response_a": r["chosen"], "response_b": r["rejected"], "choice": "A",
                   "annotator": annotator, "time": _now(), "settings": settings}
                  for _, r in numbered if (r["prompt"], r["chosen"], r["rejected"]) not in standing]
        if events:
            _append_locked(f, store.path, events)
    return len(events)


def ranking_to_pairs(prompt: str, ranked: list[str]) -> list[dict]:
    """All K(K-1)/2 {"prompt", "chosen", "rejected"} pairs of K responses ranked best-first (how InstructGPT
    turned one ranking into comparisons), in the order (0,1), (0,2), ..., (1,2), ...; chosen is ranked higher."""
    if len(ranked) < 2:
        raise ValueError(f"a ranking needs at least 2 responses, got {len(ranked)}")
    first = {}
    for i, response in enumerate(ranked):
        if response in first:
            raise ValueError(f"ranked[{i}] repeats ranked[{first[response]}] ({response[:40]!r}); a ranking needs "
                             f"distinct responses")
        first[response] = i
    return [{"prompt": prompt, "chosen": ranked[i], "rejected": ranked[j]}
            for i, j in itertools.combinations(range(len(ranked)), 2)]
