import json
import os
import random
import re
import warnings
from datetime import datetime, timedelta

import pytest

from rlhf_kit.preferences import (
    CHOICES,
    PreferenceStore,
    agreement_panel,
    cohens_kappa,
    import_pairs,
    kappa_between,
    majority_vote,
    merge,
    pair_id,
    pairwise_agreement,
    ranking_to_pairs,
)
from rlhf_kit.world import SimulatedAnnotator, gold_reward, reference_pairs

PROMPT = "### Instruction:\nWrite a positive review of a comedy about a dog.\n### Response:\n"
GOOD = "This comedy about a dog is wonderful. The acting is brilliant!"
BAD = "This comedy about a dog is awful. The acting is terrible!"


def decide(store, pid, choice, annotator="alice", a=None, b=None):
    return store.record(pid, PROMPT, a or f"{pid} first", b or f"{pid} second", choice, annotator,
                        {"model": "sft", "temperature": 0.7, "k": 2})


def summary(decisions):
    return [(d["annotator"], d["pair_id"], d["choice"]) for d in decisions]


@pytest.fixture
def store(tmp_path):
    return PreferenceStore(tmp_path / "labels" / "alice.jsonl")


# ------------------------------------------------------------------------------------------------ recording
def test_record_load_round_trip_and_lazy_file(store):
    assert store.path.parent.is_dir() and not store.path.exists()
    assert store.load() == []
    first = decide(store, "p1", "A")
    second = store.record("p2", PROMPT, GOOD, BAD, "skip", "alice")
    assert store.load() == [first, second]
    assert first["settings"] == {"model": "sft", "temperature": 0.7, "k": 2} and second["settings"] == {}
    assert {"kind", "pair_id", "prompt", "response_a", "response_b", "choice", "annotator", "time"} <= set(second)
    assert datetime.fromisoformat(first["time"]).utcoffset() == timedelta(0)
    lines = store.path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [first, second]


def test_record_validates_before_writing(store):
    with pytest.raises(ValueError, match="'A', 'B', 'tie', 'skip'.*'better'"):
        store.record("p1", PROMPT, GOOD, BAD, "better", "alice")
    with pytest.raises(ValueError, match="annotator must be a non-empty string"):
        store.record("p1", PROMPT, GOOD, BAD, "A", " ")
    with pytest.raises(ValueError, match="settings must hold only JSON values"):
        store.record("p1", PROMPT, GOOD, BAD, "A", "alice", {"temperature": object()})
    assert not store.path.exists()


def test_record_fsyncs_the_written_line_before_returning(store, monkeypatch):
    synced, real_fsync = [], os.fsync

    def counting_fsync(fd):
        st = os.fstat(fd)
        synced.append((st.st_ino, st.st_size))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    for pid in ("p1", "p2"):
        n_before = len(synced)
        decide(store, pid, "B")
        st = store.path.stat()   # the whole file, this line included, was flushed when fsync ran
        assert (st.st_ino, st.st_size) in synced[n_before:]


def test_a_later_decision_replaces_the_earlier_one(store):
    decide(store, "p1", "A")
    decide(store, "p2", "tie")
    decide(store, "p1", "B")
    decide(store, "p1", "A", annotator="bob")
    assert summary(store.load()) == [("alice", "p2", "tie"), ("alice", "p1", "B"), ("bob", "p1", "A")]
    assert store.counts() == {"A": 1, "B": 1, "tie": 1, "skip": 0, "total": 3}
    assert store.done_pair_ids("alice") == {"p1", "p2"} and store.done_pair_ids("carol") == set()


# ------------------------------------------------------------------------------------------------------ undo
def test_undo_removes_only_that_annotators_latest_decision_and_only_appends(store):
    assert store.undo("alice") is None and not store.path.exists()
    decide(store, "p1", "A")
    second = decide(store, "p2", "B")
    decide(store, "p3", "tie", annotator="bob")
    before = store.path.read_bytes()
    assert store.undo("alice") == second
    after = store.path.read_bytes()
    assert after.startswith(before) and len(after) > len(before)
    assert json.loads(after[len(before):]) == {"kind": "undo", "pair_id": "p2", "annotator": "alice",
                                               "time": json.loads(after[len(before):])["time"]}
    assert summary(store.load()) == [("alice", "p1", "A"), ("bob", "p3", "tie")]
    assert store.done_pair_ids("alice") == {"p1"}
    assert store.undo("alice")["pair_id"] == "p1"
    unchanged = store.path.read_bytes()
    assert store.undo("alice") is None and store.path.read_bytes() == unchanged
    assert summary(store.load()) == [("bob", "p3", "tie")]


def test_undo_of_a_relabel_brings_back_the_previous_choice(store):
    decide(store, "p1", "A")
    decide(store, "p1", "B")
    assert store.undo("alice")["choice"] == "B"
    assert summary(store.load()) == [("alice", "p1", "A")]


# ---------------------------------------------------------------------------------------- damaged files
def test_torn_last_line_is_skipped_with_a_warning_and_removed_by_the_next_record(store):
    for i in range(4):
        decide(store, f"p{i}", "A")
    data = store.path.read_bytes()
    torn = data[:len(data) - 25]          # a crash in the middle of writing line 4
    store.path.write_bytes(torn)
    with pytest.warns(UserWarning, match=r"alice\.jsonl line 4 is an unfinished write"):
        assert [d["pair_id"] for d in store.load()] == ["p0", "p1", "p2"]
    assert store.path.read_bytes() == torn   # loading never modifies the file
    with pytest.warns(UserWarning, match="line 4: removed an unfinished line"):
        decide(store, "p4", "B")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [d["pair_id"] for d in store.load()] == ["p0", "p1", "p2", "p4"]
    assert store.path.read_bytes().endswith(b"\n")


def test_last_line_missing_only_its_newline_is_kept(store):
    decide(store, "p0", "A")
    decide(store, "p1", "B")
    store.path.write_bytes(store.path.read_bytes()[:-1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(store.load()) == 2
        decide(store, "p2", "tie")
        assert [d["pair_id"] for d in store.load()] == ["p0", "p1", "p2"]


def test_a_last_line_without_newline_that_parses_is_a_decision_not_debris(store, tmp_path):
    """Only the newline was lost: load and undo treat the line as the decision it is, and the next write
    completes it instead of cutting it off."""
    last = decide(store, "p0", "A", a=GOOD, b=BAD)
    store.path.write_bytes(store.path.read_bytes()[:-1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.load() == [last]
        assert store.path.read_bytes() == json.dumps(last, ensure_ascii=False).encode()   # loading wrote nothing
        assert store.undo("alice") == last
        lines = store.path.read_bytes().split(b"\n")
        assert json.loads(lines[0]) == last and json.loads(lines[1])["kind"] == "undo" and lines[2:] == [b""]
        assert store.load() == []


@pytest.mark.parametrize("bad_line, message", [
    (b'{"kind": "decision", "pair_id": "p1", "prom', "line 2 is not valid JSON"),
    (b'{"kind": "decision", "pair_id": "p1", "prompt": "x", "response_a": "a", "response_b": "b", '
     b'"choice": "C", "annotator": "alice"}', "line 2: choice 'C' is not one of"),
    (b'{"kind": "vote", "pair_id": "p1"}', "line 2: 'kind' is 'vote'"),
    (b'{"kind": "undo", "pair_id": "p9", "annotator": "alice"}', "line 2 undoes pair 'p9'"),
])
def test_bad_middle_line_raises_naming_it_and_leaves_the_file(store, bad_line, message):
    for i in range(3):
        decide(store, f"p{i}", "A")
    lines = store.path.read_bytes().split(b"\n")
    lines[1] = bad_line
    store.path.write_bytes(b"\n".join(lines))
    before = store.path.read_bytes()
    with pytest.raises(ValueError, match=message) as err:
        store.load()
    assert str(store.path) in str(err.value) and "text editor" in str(err.value)
    assert store.path.read_bytes() == before


# ------------------------------------------------------------------------------------------------------ export
def test_export_keeps_a_and_b_in_trl_format_and_counts_ties_and_skips(store):
    decide(store, "p1", "A", a=GOOD, b=BAD)
    decide(store, "p2", "B", a=BAD, b=GOOD)
    decide(store, "p3", "tie")
    decide(store, "p4", "skip")
    decide(store, "p5", "skip", annotator="bob")
    dataset, info = store.export()
    assert info == {"pairs": 2, "ties": 1, "skips": 2}
    assert {"prompt", "chosen", "rejected"} <= set(dataset.column_names)
    assert dataset["chosen"] == [GOOD, GOOD] and dataset["rejected"] == [BAD, BAD]
    assert dataset["prompt"] == [PROMPT, PROMPT] and dataset["pair_id"] == ["p1", "p2"]


def test_export_of_an_empty_store_has_the_columns(store):
    dataset, info = store.export()
    assert len(dataset) == 0 and {"prompt", "chosen", "rejected"} <= set(dataset.column_names)
    assert info == {"pairs": 0, "ties": 0, "skips": 0}


# ---------------------------------------------------------------------------------------------- import_pairs
def test_import_pairs_from_rows_and_files(store, tmp_path):
    rows = [{"prompt": PROMPT, "chosen": GOOD, "rejected": BAD, "score": 1.0},
            {"prompt": PROMPT, "chosen": GOOD, "rejected": "Meh."}]
    assert import_pairs(rows, store) == 2
    path = tmp_path / "more.json"
    path.write_text(json.dumps([{"prompt": "q", "chosen": "yes", "rejected": "no"}]), encoding="utf-8")
    assert import_pairs(path, store, annotator="ta") == 1
    decisions = store.load()
    assert summary(decisions) == [("import", pair_id(PROMPT, GOOD, BAD), "A"),
                                  ("import", pair_id(PROMPT, GOOD, "Meh."), "A"),
                                  ("ta", pair_id("q", "yes", "no"), "A")]
    assert decisions[2]["settings"] == {"imported_from": str(path)}
    dataset, _ = store.export()
    assert dataset["chosen"] == [GOOD, GOOD, "yes"] and dataset["rejected"] == [BAD, "Meh.", "no"]
    assert import_pairs([], store) == 0


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


OK_ROW = {"prompt": "p", "chosen": "c", "rejected": "r"}


@pytest.mark.parametrize("rows, message", [
    ([OK_ROW, {"prompt": "p2", "good": "c", "bad": "r"}],
     "row 2 has no 'chosen' field (it has 'prompt', 'good', 'bad'); expected prompt/chosen/rejected"),
    ([OK_ROW, {"prompt": "p2", "chosen": "c"}], "row 2 has no 'rejected' field (it has 'prompt', 'chosen')"),
    ([OK_ROW, dict(OK_ROW, prompt="p2"), dict(OK_ROW, prompt="p3", rejected="  ")],
     "row 3: 'rejected' is empty; expected prompt/chosen/rejected"),
    ([OK_ROW, dict(OK_ROW, prompt="p2", chosen=7)], "row 2: 'chosen' is 7, expected a string"),
    ([OK_ROW, dict(OK_ROW, prompt="p2"), dict(OK_ROW)], "row 3 duplicates row 1 (same prompt, chosen and rejected)"),
    ([{"prompt": PROMPT, "chosen": GOOD, "rejected": BAD}, OK_ROW, dict(OK_ROW, chosen=" ")],
     "row 3: 'chosen' is empty"),   # a row already in the store does not hide a bad one
    ([OK_ROW, dict(OK_ROW, rejected="c")], "row 2: 'chosen' and 'rejected' are the same text"),
    ([OK_ROW, ["p", "c", "r"]], "row 2 is a list; expected prompt/chosen/rejected"),
])
def test_import_pairs_rejects_bad_rows_and_leaves_the_store_untouched(store, tmp_path, rows, message):
    decide(store, "stored", "B", a=BAD, b=GOOD)   # stands as prompt PROMPT, chosen GOOD, rejected BAD
    before = store.path.read_bytes()
    with pytest.raises(ValueError, match="^" + re.escape("preferences.jsonl " + message)):
        import_pairs(_jsonl(tmp_path / "preferences.jsonl", rows), store)
    assert store.path.read_bytes() == before
    with pytest.raises(ValueError, match="^" + re.escape(message)):   # the same rows as a list
        import_pairs(rows, store)
    assert store.path.read_bytes() == before


def test_import_pairs_twice_adds_nothing_the_second_time(store, tmp_path):
    path = _jsonl(tmp_path / "preferences.jsonl", [OK_ROW, dict(OK_ROW, prompt="p2")])
    assert import_pairs(path, store) == 2
    before = store.path.read_bytes()
    assert import_pairs(path, store) == 0 and import_pairs(path, store, annotator="ta") == 0
    assert store.path.read_bytes() == before
    decide(store, "mine", "B", a=BAD, b=GOOD)   # a learner's click that stands as chosen GOOD, rejected BAD
    rows = [{"prompt": PROMPT, "chosen": GOOD, "rejected": BAD}, dict(OK_ROW, prompt="p3"), OK_ROW]
    assert import_pairs(rows, store) == 1   # only p3 is new
    assert [d["prompt"] for d in store.load()] == ["p", "p2", PROMPT, "p3"]


def test_an_import_cut_short_by_a_crash_is_completed_by_running_it_again(store, tmp_path):
    rows = [dict(OK_ROW, prompt=f"p{i}") for i in range(5)]
    assert import_pairs(rows, store) == 5
    data = store.path.read_bytes()
    store.path.write_bytes(data[:data.index(b'"p3"') + 10])   # killed while writing row 4: rows 1-3 landed
    with pytest.warns(UserWarning, match="unfinished write"):
        assert len(store.load()) == 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert import_pairs(rows, store) == 2
    assert any("line 4: removed an unfinished line" in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [d["prompt"] for d in store.load()] == [f"p{i}" for i in range(5)]


def test_an_import_that_fails_while_writing_leaves_no_line_behind(store, monkeypatch):
    decide(store, "p0", "A")
    before = store.path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        import_pairs([dict(OK_ROW, prompt=f"p{i}") for i in range(3)], store)
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert import_pairs([dict(OK_ROW, prompt=f"p{i}") for i in range(3)], store) == 3


def test_import_pairs_errors_do_not_create_the_store(store):
    with pytest.raises(ValueError, match="row 1 has no 'prompt' field"):
        import_pairs([{"chosen": "c", "rejected": "r"}], store)
    assert not store.path.exists()


# ---------------------------------------------------------------------------------------- pairs and ids
def test_ranking_to_pairs_gives_every_pair_best_first():
    pairs = ranking_to_pairs("q", ["r0", "r1", "r2", "r3"])
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [
        ("r0", "r1"), ("r0", "r2"), ("r0", "r3"), ("r1", "r2"), ("r1", "r3"), ("r2", "r3")]
    assert all(p["prompt"] == "q" for p in pairs)
    with pytest.raises(ValueError, match="at least 2 responses"):
        ranking_to_pairs("q", ["only"])
    with pytest.raises(ValueError, match=r"ranked\[2\] repeats ranked\[0\]"):
        ranking_to_pairs("q", ["x", "y", "x"])


def test_pair_id_is_stable_and_order_sensitive():
    assert pair_id("p", "a", "b") == "5c74e27923240958"
    assert pair_id("p", "a", "b") != pair_id("p", "b", "a")
    assert pair_id("p", "a b", "c") != pair_id("p", "a", "b c")


# ------------------------------------------------------------------------------------------------- agreement
def test_cohens_kappa_hand_computed():
    # 50 items: both yes 20, a yes / b no 5, a no / b yes 10, both no 15.
    # p_o = 35/50 = 0.7; a says yes 25/50, b 30/50: p_e = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = 0.2/0.5 = 0.4
    a = ["A"] * 20 + ["A"] * 5 + ["B"] * 10 + ["B"] * 15
    b = ["A"] * 20 + ["B"] * 5 + ["A"] * 10 + ["B"] * 15
    assert cohens_kappa(a, b) == pytest.approx(0.4)
    assert cohens_kappa(["A", "B"], ["B", "A"]) == pytest.approx(-1.0)
    assert cohens_kappa(a, a) == 1.0
    assert cohens_kappa(["tie"] * 5, ["tie"] * 5) == 1.0   # p_e == 1


def test_cohens_kappa_is_about_zero_for_independent_labellers():
    rng = random.Random(0)
    a = [rng.choice(CHOICES[:3]) for _ in range(5000)]
    b = [rng.choice(CHOICES[:3]) for _ in range(5000)]
    assert abs(cohens_kappa(a, b)) < 0.03


def test_cohens_kappa_rejects_mismatched_or_empty_labels():
    with pytest.raises(ValueError, match="got 2 and 1 labels"):
        cohens_kappa(["A", "B"], ["A"])
    with pytest.raises(ValueError, match="at least one item"):
        cohens_kappa([], [])


@pytest.fixture
def classroom(tmp_path):
    """Three students' files: p1 A/A/B, p2 A/B/tie, p3 B/B/skip, p4 tie/A/-, p5 skip/skip/-."""
    labels = {"ann": ["A", "A", "B", "tie", "skip"], "ben": ["A", "B", "B", "A", "skip"], "cat": ["B", "tie", "skip"]}
    paths = []
    for name, choices in labels.items():
        store = PreferenceStore(tmp_path / f"{name}.jsonl")
        for i, choice in enumerate(choices, start=1):
            store.record(f"p{i}", PROMPT, f"a{i}", f"b{i}", choice, name)
        paths.append(store.path)
    return paths


def test_merge_and_pairwise_statistics(classroom):
    decisions = merge(classroom)
    assert len(decisions) == 13 and {d["annotator"] for d in decisions} == {"ann", "ben", "cat"}
    assert pairwise_agreement(decisions, "ann", "ben") == (pytest.approx(2 / 3), 3)   # p1, p2, p3
    rate, n = pairwise_agreement(decisions, "ann", "nobody")
    assert n == 0 and rate != rate
    kappa, n = kappa_between(decisions, "ann", "ben")   # p1..p4: A/A, A/B, B/B, tie/A
    assert n == 4 and kappa == pytest.approx(cohens_kappa(["A", "A", "B", "tie"], ["A", "B", "B", "A"]))
    assert majority_vote(decisions) == {"p1": "A", "p2": "tie", "p3": "B", "p4": "tie"}


def test_majority_vote_counts_each_annotators_latest_vote_once():
    rows = [{"pair_id": "p", "annotator": "x", "choice": "B"}, {"pair_id": "p", "annotator": "x", "choice": "A"},
            {"pair_id": "p", "annotator": "y", "choice": "A"}, {"pair_id": "p", "annotator": "z", "choice": "B"}]
    assert majority_vote(rows) == {"p": "A"}


def test_merge_rejects_a_pair_id_naming_two_different_pairs(classroom, tmp_path):
    other = PreferenceStore(tmp_path / "dan.jsonl")
    other.record("p1", PROMPT, "b1", "a1", "A", "dan")   # same id, A and B swapped
    with pytest.raises(ValueError, match="pair_id 'p1' names different texts"):
        merge(classroom + [other.path])
    with pytest.raises(FileNotFoundError, match="no preference file at"):
        merge([tmp_path / "missing.jsonl"])


class FixedAnnotator:
    """prefers A with probability 0.8 and always draws A."""

    def prob_a(self, prompt, a, b):
        return 0.8

    def prefer(self, prompt, a, b):
        return "A"


def test_agreement_panel_with_a_fixed_annotator(store):
    gold = {"g1": 2.0, "g0": 0.0}
    decide(store, "p1", "A", a="g1", b="g0")   # agrees with simulated and gold
    decide(store, "p2", "B", a="g1", b="g0")   # disagrees with both
    decide(store, "p3", "A", a="g0", b="g0")   # no gold ordering
    decide(store, "p4", "tie")
    decide(store, "p5", "B", annotator="bob", a="g0", b="g1")
    panel = agreement_panel(store.load(), "alice", FixedAnnotator(), lambda prompt, r: gold[r])
    assert panel == {"n": 3, "agree_simulated": pytest.approx(2 / 3),
                     "agree_simulated_expected": pytest.approx((0.8 + 0.2 + 0.8) / 3),
                     "agree_gold": 0.5, "n_gold": 2, "instructgpt_reference": 0.73}


def test_agreement_panel_for_a_gold_following_labeller(store):
    for p, a, b in reference_pairs(seed=1, n=30):
        ga, gb = gold_reward(p, a), gold_reward(p, b)
        if ga != gb:
            store.record(pair_id(p, a, b), p, a, b, "A" if ga > gb else "B", "alice")
    panel = agreement_panel(store.load(), "alice", SimulatedAnnotator(temperature=0.5), gold_reward)
    assert panel["agree_gold"] == 1.0 and panel["n_gold"] == panel["n"] > 20
    assert 0.5 < panel["agree_simulated_expected"] < 1.0 and 0.0 <= panel["agree_simulated"] <= 1.0


def test_gold_agreement_counts_only_decided_ab_pairs():
    from rlhf_kit.preferences import gold_agreement

    pairs = [{"pair_id": str(i), "prompt": "p", "response_a": a, "response_b": b}
             for i, (a, b) in enumerate([("xx", "x"), ("x", "xx"), ("x", "y"), ("xxx", "x")])]
    gold = lambda prompt, response: float(len(response))           # noqa: E731 - longer is better here
    rate, n = gold_agreement({"0": "A", "1": "A", "2": "A", "3": "tie", "9": "A"}, pairs, gold)
    assert (rate, n) == (0.5, 2)       # pair 2 is a gold tie, 3 a tie label, 9 unknown
    rate, n = gold_agreement({}, pairs, gold)
    assert n == 0 and rate != rate
