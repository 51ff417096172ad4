"""The collector widget, driven from code: buttons are clicked, the store on disk is read back."""

import random

import pytest

from rlhf_kit.preferences import PreferenceStore
from rlhf_kit.ui.collector import PreferenceCollector
from rlhf_kit.world import SimulatedAnnotator, format_prompt, make_review, random_attributes


@pytest.fixture
def pairs():
    rng = random.Random(0)
    out = []
    for i in range(8):
        attrs = random_attributes(rng)
        out.append({"pair_id": f"p{i}", "prompt": format_prompt(attrs),
                    "response_a": make_review(rng, attrs), "response_b": make_review(rng, random_attributes(rng))})
    return out


def on_disk(store, annotator="ann"):
    return [(d["pair_id"], d["choice"]) for d in store.load() if d["annotator"] == annotator]


def test_clicks_land_on_disk_in_order_and_undo_shows_the_pair_again(tmp_path, pairs):
    store = PreferenceStore(tmp_path / "labels.jsonl")
    collector = PreferenceCollector(store, pairs, annotator="ann")
    for key in ("A", "B", "tie", "skip"):
        collector.buttons[key].click()
    assert on_disk(store) == [("p0", "A"), ("p1", "B"), ("p2", "tie"), ("p3", "skip")]
    assert collector.current["pair_id"] == "p4"
    collector.buttons["undo"].click()
    assert on_disk(store) == [("p0", "A"), ("p1", "B"), ("p2", "tie")]
    assert collector.current["pair_id"] == "p3"                       # the undone pair is back on screen
    assert [(d["pair_id"], d["choice"]) for d in collector.log] == on_disk(store)
    assert collector.progress_label.value == "3 / 8 labelled"
    assert "p3" not in collector.prompt.value and pairs[3]["prompt"].splitlines()[1] in collector.prompt.value


def test_no_name_no_labels(tmp_path, pairs):
    store = PreferenceStore(tmp_path / "labels.jsonl")
    collector = PreferenceCollector(store, pairs)
    assert collector.buttons["A"].disabled and "Type your name" in collector.status.value
    assert collector.choose("A") is None and store.load() == []
    collector.name.value = "ann"
    assert not collector.buttons["A"].disabled
    collector.buttons["A"].click()
    assert on_disk(store) == [("p0", "A")]


def test_resumes_after_a_restart_and_stops_at_the_budget(tmp_path, pairs):
    path = tmp_path / "labels.jsonl"
    first = PreferenceCollector(PreferenceStore(path), pairs, annotator="ann", budget=5)
    first.buttons["A"].click()
    first.buttons["B"].click()
    again = PreferenceCollector(PreferenceStore(path), pairs, annotator="ann", budget=5)   # a new kernel
    assert again.current["pair_id"] == "p2" and again.progress_label.value == "2 / 5 labelled"
    for _ in range(3):
        again.buttons["tie"].click()
    assert again.current is None and again.buttons["A"].disabled and "Done: 5 labelled" in again.status.value
    assert len(on_disk(PreferenceStore(path))) == 5


def test_autopilot_labels_n_pairs_with_the_simulated_annotator(tmp_path, pairs):
    store = PreferenceStore(tmp_path / "labels.jsonl")
    collector = PreferenceCollector(store, pairs, annotator="ann", simulated=SimulatedAnnotator(seed=0))
    collector.buttons["A"].click()                          # one by hand
    assert collector.autopilot(5) == 5
    decisions = [d for d in store.load() if d["annotator"] == "ann"]
    assert [d["pair_id"] for d in decisions] == [f"p{i}" for i in range(6)]
    assert all(d["settings"].get("autopilot") for d in decisions[1:]) and not decisions[0]["settings"]
    assert {d["choice"] for d in decisions[1:]} <= {"A", "B"}
    assert collector.autopilot(100) == 2 and collector.current is None      # only what is left
    # the agreement panel counts the hand-made choice only, with the 73% reference
    assert "1 A, 0 B, 0 tie, 0 skip (and 7 by the autopilot)" in collector.panel.value
    assert "On your 1 A/B choices" in collector.panel.value and "73%" in collector.panel.value


def test_agreement_panel_counts_and_stays_put(tmp_path, pairs):
    simulated = SimulatedAnnotator(seed=0)
    collector = PreferenceCollector(PreferenceStore(tmp_path / "x.jsonl"), pairs, annotator="ann",
                                    simulated=simulated)
    assert collector.panel.value == ""                                  # nothing labelled yet
    state = simulated.rng.getstate()
    for key in ("A", "B", "B", "tie", "skip"):
        collector.choose(key)
    panel = collector.panel.value
    assert "Your labels: 1 A, 2 B, 1 tie, 1 skip." in panel and "On your 3 A/B choices" in panel
    assert "InstructGPT" in panel and "73%" in panel
    assert simulated.rng.getstate() == state                            # the panel leaves the autopilot's draws
    collector.name.value, collector.name.value = "bob", "ann"           # two refreshes redraw the same numbers
    assert collector.panel.value == panel


def test_agreement_panel_without_a_simulated_annotator_still_counts(tmp_path, pairs):
    collector = PreferenceCollector(PreferenceStore(tmp_path / "x.jsonl"), pairs, annotator="ann")
    collector.choose("tie")
    assert "Your labels: 0 A, 0 B, 1 tie, 0 skip." in collector.panel.value and "73%" in collector.panel.value
    assert "simulated" not in collector.panel.value


def test_autopilot_never_relabels_what_an_earlier_session_labelled(tmp_path, pairs):
    path = tmp_path / "labels.jsonl"
    PreferenceCollector(PreferenceStore(path), pairs, annotator="ann").buttons["skip"].click()
    later = PreferenceCollector(PreferenceStore(path), pairs, annotator="ann", simulated=SimulatedAnnotator())
    assert later.autopilot(100) == 7
    assert sorted(pid for pid, _ in on_disk(PreferenceStore(path))) == [f"p{i}" for i in range(8)]


def test_autopilot_without_a_simulated_annotator_is_a_clear_error(tmp_path, pairs):
    collector = PreferenceCollector(PreferenceStore(tmp_path / "x.jsonl"), pairs, annotator="ann")
    assert collector.autopilot_button.disabled
    with pytest.raises(ValueError, match="simulated=SimulatedAnnotator"):
        collector.autopilot(3)


def test_responses_are_escaped(tmp_path, pairs):
    pairs[0]["response_a"] = "<script>alert(1)</script>"
    collector = PreferenceCollector(PreferenceStore(tmp_path / "x.jsonl"), pairs, annotator="ann")
    assert "<script>" not in collector.responses[0].value and "&lt;script&gt;" in collector.responses[0].value
