"""Classroom pooling: each student's clicks land in their own file, names are checked, the same name resumes, `pool`
computes the room's agreement, and Voila serves classroom/collect.ipynb as a page whose widget really labels.

The Voila test drives the page the way a browser does, without one (tests/classroom_pages.py). Names in any
script, claims on a name and the server's limits are tested in test_classroom_names.py and test_classroom_room.py.
"""

import json
import math

import pytest
from classroom_pages import (  # tests/classroom_pages.py
    NOTEBOOK,
    Page,
    click,
    events,
    label_files,
    make_pairs,
    require_voila,
    start,
    voila_env,
    voila_server,
    write_pairs,
)

from rlhf_kit.preferences import PreferenceStore
from rlhf_kit.ui import classroom
from rlhf_kit.ui.classroom import ClassroomCollector, clean_name, pool


# ------------------------------------------------------------------------------------------- the widget
def test_two_students_get_two_files_holding_exactly_their_clicks(tmp_path):
    labels, pairs = tmp_path / "labels", make_pairs()
    ada = start(labels, pairs, "  Ada   Lovelace ")
    bob = start(labels, pairs, "bob_2")
    assert (ada.annotator, ada.path) == ("Ada-Lovelace", labels / "Ada-Lovelace.jsonl")
    assert (bob.annotator, bob.path) == ("bob_2", labels / "bob_2.jsonl")
    assert ada.name.disabled and ada.start_button.disabled
    assert ada.widget.children[-1].children == (ada.collector.widget,)

    click(ada, "A", "B")
    click(bob, "B", "skip", "undo", "A")         # the undo takes back the skip; then A on that same pair
    click(ada, "tie")

    assert label_files(labels) == ["Ada-Lovelace.jsonl", "bob_2.jsonl"]
    ids = [p["pair_id"] for p in pairs]
    got = [(e["kind"], e["pair_id"], e.get("choice"), e["annotator"]) for e in events(ada.path)]
    assert got == [("decision", ids[0], "A", "Ada-Lovelace"), ("decision", ids[1], "B", "Ada-Lovelace"),
                   ("decision", ids[2], "tie", "Ada-Lovelace")]
    got = [(e["kind"], e["pair_id"], e.get("choice"), e["annotator"]) for e in events(bob.path)]
    assert got == [("decision", ids[0], "B", "bob_2"), ("decision", ids[1], "skip", "bob_2"),
                   ("undo", ids[1], None, "bob_2"), ("decision", ids[1], "A", "bob_2")]
    assert all(e["settings"] == {"classroom": True} for e in events(ada.path))
    assert [(d["pair_id"], d["choice"]) for d in PreferenceStore(bob.path).load()] == [(ids[0], "B"), (ids[1], "A")]


@pytest.mark.parametrize("typed, why", [
    ("", "Type your name first"),
    ("   ", "Type your name first"),
    ("../evil", "cannot contain '/'"),
    ("a/b", "cannot contain '/'"),
    ("ada;rm", "cannot contain ';'"),
    ("-ada", "must start with a letter or a digit"),
    (".hidden", "must start with a letter or a digit"),
    ("x" * 41, "41 characters long"),
])
def test_a_bad_name_gets_a_message_and_writes_nothing(tmp_path, typed, why):
    labels = tmp_path / "labels"
    page = start(labels, make_pairs(), typed)
    assert why in page.message.value
    assert page.collector is None and page.path is None and page.area.children == ()
    assert not page.name.disabled and not page.start_button.disabled      # they can fix it and press Start again
    assert not labels.exists()
    page.name.value = "ada"
    page.start_button.click()
    assert page.path == labels / "ada.jsonl"


@pytest.mark.parametrize("typed, name", [("Ada Lovelace", "Ada-Lovelace"), (" zoë \t o ", "zoë-o"),
                                         ("a.b_c-D9", "a.b_c-D9"), ("x" * 40, "x" * 40)])
def test_clean_name(typed, name):
    assert clean_name(typed) == (name, "")


def test_the_same_name_resumes_where_the_file_left_off(tmp_path):
    labels, pairs = tmp_path / "labels", make_pairs()
    ids = [p["pair_id"] for p in pairs]
    first = start(labels, pairs, "Ada", budget=4)
    click(first, "A", "B")
    first.close()                                          # a reload: the old page's kernel shuts down

    again = start(labels, pairs, "ada", budget=4)          # upper/lower case does not matter
    assert (again.annotator, again.path) == ("Ada", labels / "Ada.jsonl")
    assert "Welcome back" in again.message.value and "2 already labelled" in again.message.value
    assert again.collector.progress_label.value == "2 / 4 labelled"
    assert again.collector.current["pair_id"] == ids[2]
    click(again, "tie", "B")
    assert again.collector.current is None and again.collector.buttons["A"].disabled     # budget reached
    assert [(d["pair_id"], d["choice"]) for d in PreferenceStore(labels / "Ada.jsonl").load()] == \
        [(ids[0], "A"), (ids[1], "B"), (ids[2], "tie"), (ids[3], "B")]
    assert label_files(labels) == ["Ada.jsonl"]


def test_the_name_is_fixed_once_started(tmp_path):
    labels, pairs = tmp_path / "labels", make_pairs()
    page = start(labels, pairs, "ada")
    collector = page.collector
    page.name.value = "bob"                      # a second Start on the same page does nothing
    page.start_button.click()
    collector.name.value = "bob"                 # the collector's own name box is pinned to the student
    assert page.collector is collector and collector.annotator == "ada" and collector.name.disabled
    click(page, "A")
    assert [e["annotator"] for e in events(labels / "ada.jsonl")] == ["ada"]
    assert not (labels / "bob.jsonl").exists()


def test_a_damaged_file_gets_a_message_not_a_traceback(tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "ada.jsonl").write_text("this is not json\n")
    page = start(labels, make_pairs(), "ada")
    assert page.collector is None and "Cannot open the labels of ada" in page.message.value
    assert "line 1" in page.message.value


def test_no_pairs_is_an_error():
    with pytest.raises(ValueError, match="at least one pair"):
        ClassroomCollector("unused", [])


# ------------------------------------------------------------------------------------------- pooling
def record(store, pair, choice, annotator, **settings):
    store.record(pair["pair_id"], pair["prompt"], pair["response_a"], pair["response_b"], choice,
                 annotator=annotator, settings=settings)


def test_pool_on_a_known_example(tmp_path):
    p = make_pairs(5)
    alice, bob, carol, dave = (PreferenceStore(tmp_path / f"{n}.jsonl") for n in ("alice", "bob", "carol", "dave"))
    record(alice, p[1], "A", "alice")
    alice.undo("alice")                                        # undone: not counted
    for pair, choice in zip(p, ("A", "B", "A", "tie")):
        record(alice, pair, choice, "alice")
    for pair, choice in zip(p, ("A", "A", "A")):
        record(bob, pair, choice, "bob")
    record(bob, p[3], "tie", "bob", autopilot=True)
    for pair, choice in zip(p, ("B", "B", "skip")):
        record(carol, pair, choice, "carol")
    record(dave, p[4], "A", "dave")                            # shares no pair with anyone
    (tmp_path / "notes.txt").write_text("not a label file")

    s = pool(tmp_path)
    assert s["files"] == [tmp_path / f"{n}.jsonl" for n in ("alice", "bob", "carol", "dave")]
    assert s["annotators"] == ["alice", "bob", "carol", "dave"]
    assert s["decisions"] == {
        "alice": {"A": 2, "B": 1, "tie": 1, "skip": 0, "total": 4, "autopilot": 0},
        "bob": {"A": 3, "B": 0, "tie": 1, "skip": 0, "total": 4, "autopilot": 1},
        "carol": {"A": 0, "B": 2, "tie": 0, "skip": 1, "total": 3, "autopilot": 0},
        "dave": {"A": 1, "B": 0, "tie": 0, "skip": 0, "total": 1, "autopilot": 0}}
    rows = {row["annotators"]: row for row in s["agreement"]}
    assert len(rows) == 6
    # alice/bob: A/B on pairs 0-2, same on 0 and 2 -> 2/3. kappa over pairs 0-3: alice A B A tie, bob A A A tie:
    # p_o = 3/4, p_e = (2*3 + 1*0 + 1*1)/16 = 7/16, kappa = (12/16 - 7/16) / (9/16) = 5/9.
    assert rows[("alice", "bob")]["agreement"] == pytest.approx(2 / 3) and rows[("alice", "bob")]["n_agreement"] == 3
    assert rows[("alice", "bob")]["kappa"] == pytest.approx(5 / 9) and rows[("alice", "bob")]["n_kappa"] == 4
    # alice/carol on pairs 0-1 (carol skipped 2): A B vs B B -> 1/2; p_o = 1/2, p_e = (1*0 + 1*2)/4 = 1/2 -> 0
    assert (rows[("alice", "carol")]["agreement"], rows[("alice", "carol")]["n_agreement"]) == (0.5, 2)
    assert rows[("alice", "carol")]["kappa"] == pytest.approx(0) and rows[("alice", "carol")]["n_kappa"] == 2
    # bob/carol: A A vs B B -> 0 agreement; p_o = 0, p_e = 0 -> kappa 0
    assert (rows[("bob", "carol")]["agreement"], rows[("bob", "carol")]["n_agreement"]) == (0.0, 2)
    assert rows[("bob", "carol")]["kappa"] == pytest.approx(0)
    for other in ("alice", "bob", "carol"):
        row = rows[(other, "dave")]
        assert math.isnan(row["agreement"]) and math.isnan(row["kappa"]) and row["n_agreement"] == row["n_kappa"] == 0
    assert s["mean_agreement"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert s["mean_kappa"] == pytest.approx((5 / 9 + 0 + 0) / 3)
    ids = [q["pair_id"] for q in p]
    assert s["majority"] == {ids[0]: "A", ids[1]: "B", ids[2]: "A", ids[3]: "tie", ids[4]: "A"}
    assert len(s["pooled"]) == 12


def test_pool_of_an_empty_or_missing_folder(tmp_path):
    s = pool(tmp_path)
    assert (s["files"], s["annotators"], s["agreement"], s["majority"]) == ([], [], [], {})
    assert math.isnan(s["mean_agreement"]) and math.isnan(s["mean_kappa"])
    with pytest.raises(FileNotFoundError, match="no classroom labels"):
        pool(tmp_path / "nobody-yet")


def test_pool_of_what_the_widget_wrote_and_its_command_line(tmp_path, capsys):
    labels, pairs = tmp_path / "labels", make_pairs(3)
    click(start(labels, pairs, "ada"), "A", "B", "A")
    click(start(labels, pairs, "bob"), "A", "A", "skip")
    s = pool(labels)
    assert s["annotators"] == ["ada", "bob"]
    assert (s["agreement"][0]["agreement"], s["agreement"][0]["n_agreement"]) == (0.5, 2)

    assert classroom.main([str(labels)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["files"] == [str(labels / "ada.jsonl"), str(labels / "bob.jsonl")]
    assert printed["agreement"][0]["annotators"] == ["ada", "bob"] and "pooled" not in printed


def test_pool_pools_every_readable_file_and_lists_the_unreadable_ones(tmp_path, capsys):
    p = make_pairs(3)
    for name, choice in (("alice", "A"), ("bob", "B"), ("dave", "A")):
        record(PreferenceStore(tmp_path / f"{name}.jsonl"), p[0], choice, name)
    with open(tmp_path / "bob.jsonl", "a") as f:
        f.write("garbage from an editor\n{}\n")                # damaged by hand: its line 2 is not JSON
    (tmp_path / "carol.jsonl").write_bytes(b"\xff\xfe not utf-8\n")
    conflicting = PreferenceStore(tmp_path / "erin.jsonl")         # pair 0's id on other texts
    conflicting.record(p[0]["pair_id"], "another prompt", "x", "y", "A", "erin")
    (tmp_path / "folder.jsonl").mkdir()                            # not a file at all

    s = pool(tmp_path)
    assert s["annotators"] == ["alice", "dave"] and s["agreement"][0]["agreement"] == 1.0
    problems = {row["file"].name: row["problem"] for row in s["unreadable"]}
    assert sorted(problems) == ["bob.jsonl", "carol.jsonl", "erin.jsonl", "folder.jsonl"]
    assert "bob.jsonl line 2 is not valid JSON" in problems["bob.jsonl"]
    assert "carol.jsonl line 1 is not valid JSON" in problems["carol.jsonl"]
    assert "names different texts" in problems["erin.jsonl"]

    assert classroom.main([str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["annotators"] == ["alice", "dave"]
    assert f"left out {tmp_path / 'bob.jsonl'}: " in out.err and "pooled 2 of 6 label files" in out.err
    assert "Traceback" not in out.err


# ----------------------------------------------------------------------------------- the notebook's inputs
def test_inputs_from_the_environment(tmp_path, monkeypatch):
    pairs = make_pairs(3)
    env = {classroom.PAIRS_ENV: str(write_pairs(tmp_path / "pairs.jsonl", pairs)),
           classroom.DIR_ENV: str(tmp_path / "room"), classroom.BUDGET_ENV: "2"}
    assert classroom.classroom_pairs(env) == pairs
    assert classroom.classroom_dir(env) == tmp_path / "room"
    assert classroom.classroom_budget(env) == 2
    assert classroom.classroom_budget({}) is None
    with pytest.raises(ValueError, match="positive number"):
        classroom.classroom_budget({classroom.BUDGET_ENV: "0"})

    # Without $RLHF_KIT_CLASSROOM_PAIRS: the workspace's `preferences` stage (a finished one is only read).
    monkeypatch.setenv("RLHF_KIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RLHF_KIT_PRESET", "ci")
    stage = tmp_path / "home" / "ci-seed0" / "preferences"
    stage.mkdir(parents=True)
    write_pairs(stage / "pairs.jsonl", pairs)
    (stage / "DONE.json").write_text("{}")
    assert classroom.classroom_pairs({}) == pairs
    assert classroom.classroom_dir({}) == tmp_path / "home" / "ci-seed0" / "classroom"


@pytest.mark.parametrize("lines, match", [
    (['{"pair_id": "p", "prompt": "x", "response_a": "a"}'], "line 1 has no string 'response_b'"),
    (['{"pair_id": "p", "prompt": "x", "response_a": "a", "response_b": "b"}'] * 2, "line 2 repeats pair_id 'p'"),
    (["not json"], "line 1 is not valid JSON"),
    ([""], "holds no pairs"),
])
def test_a_bad_pairs_file_names_the_line(tmp_path, lines, match):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=match):
        classroom.read_pairs(path)


def test_the_notebook_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    assert "ClassroomCollector(" in "".join(code[-1]["source"])


# ------------------------------------------------------------------------------------------------ Voila
@pytest.mark.slow
def test_voila_serves_the_collector_and_each_student_labels_into_their_own_file(tmp_path):
    require_voila()
    pairs = make_pairs(4)
    labels = tmp_path / "labels"
    ids = [p["pair_id"] for p in pairs]
    with voila_server(tmp_path, voila_env(tmp_path, pairs, labels)) as (address, log_path, _):
        page = Page(address, log_path)
        try:
            assert page.status == 200
            assert "application/vnd.jupyter.widget-view+json" in page.html, "the page holds no widget output"
            assert "Which response is better?" in page.html and "Label preferences with your class" in page.html
            assert "classroom_pairs(" not in page.html, "Voila should not show the notebook's code"
            name_id, name = page.find("rk-classroom-name")
            assert name["description"] == "Your name" and name["value"] == ""
            assert page.find("rk-classroom-start")[1]["description"] == "Start"

            page.type("rk-classroom-name", "Ada Lovelace")
            page.click("rk-classroom-start")
            page.wait(lambda: page.value("rk-progress") == "0 / 4 labelled", "the collector")
            page.click("rk-choice-A")
            page.wait(lambda: page.value("rk-progress") == "1 / 4 labelled", "1 / 4 labelled")
        finally:
            page.close()                                   # the tab is closed: Voila shuts its kernel down
        assert [(e["pair_id"], e["choice"], e["annotator"]) for e in events(labels / "Ada-Lovelace.jsonl")] == \
            [(ids[0], "A", "Ada-Lovelace")]

        again = Page(address, log_path)                    # a reload: a new kernel, the same name resumes
        try:
            again.type("rk-classroom-name", "ada-lovelace")
            again.click("rk-classroom-start")
            again.wait(lambda: "Welcome back" in (again.value("rk-classroom-message") or ""), "Welcome back")
            again.wait(lambda: again.value("rk-progress") == "1 / 4 labelled", "1 / 4 labelled")
            again.click("rk-choice-B")
            again.wait(lambda: again.value("rk-progress") == "2 / 4 labelled", "2 / 4 labelled")
        finally:
            again.close()
    assert [(e["pair_id"], e["choice"], e["annotator"]) for e in events(labels / "Ada-Lovelace.jsonl")] == \
        [(ids[0], "A", "Ada-Lovelace"), (ids[1], "B", "Ada-Lovelace")]
    assert label_files(labels) == ["Ada-Lovelace.jsonl"]
