"""Names in the classroom: one page at a time labels under a name (a second page is told it is in use and may take
it over), "Sam" and "sam" are one file from the moment Start is pressed, a killed page leaves its name free, and
names in any script are accepted while path separators, '..' and control characters are refused. No recorded
click is ever lost on the way.
"""

import json
import os
import socket
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest
from classroom_pages import click, events, label_files, make_pairs, start  # tests/classroom_pages.py

from rlhf_kit.preferences import PreferenceStore
from rlhf_kit.ui import claims
from rlhf_kit.ui.classroom import clean_name

PAGE = Path(__file__).with_name("page_process.py")


def shown(widget) -> bool:
    return widget.layout.display != "none"


def choices(path: Path) -> list[tuple[str, str, str]]:
    return [(d["pair_id"], d["choice"], d["annotator"]) for d in PreferenceStore(path).load()]


# ------------------------------------------------------------------------------- one page per name
def test_a_name_in_use_on_another_page_is_refused_and_can_be_taken_over(tmp_path):
    labels, pairs = tmp_path / "labels", make_pairs()
    ids = [p["pair_id"] for p in pairs]
    first = start(labels, pairs, "Sam")
    assert not shown(first.takeover_button)
    click(first, "A")

    second = start(labels, pairs, "sam")                       # another page, the same name in other letters
    assert second.collector is None and second.area.children == ()
    assert "Sam is in use on another page" in second.message.value
    assert "Pick another name" in second.message.value and "take it over" in second.message.value
    assert shown(second.takeover_button) and not second.name.disabled
    click(first, "B")                                          # the first page still labels
    assert choices(labels / "Sam.jsonl") == [(ids[0], "A", "Sam"), (ids[1], "B", "Sam")]

    second.takeover_button.click()
    assert second.collector is not None and second.path == labels / "Sam.jsonl" and second.annotator == "Sam"
    assert not shown(second.takeover_button)
    assert second.collector.current["pair_id"] == ids[2]      # it carries on after the first page's labels

    click(first, "tie")                                        # refused: nothing written, and the page says so
    assert "Another page took over the name Sam" in first.collector.status.value
    assert "this click was not saved" in first.collector.status.value
    assert all(b.disabled for b in first.collector.buttons.values())
    click(second, "skip")
    first.collector.undo()                                     # the first page can no longer undo the second's
    assert choices(labels / "Sam.jsonl") == [(ids[0], "A", "Sam"), (ids[1], "B", "Sam"), (ids[2], "skip", "Sam")]
    assert [e["kind"] for e in events(labels / "Sam.jsonl")] == ["decision"] * 3
    assert label_files(labels) == ["Sam.jsonl"]


def test_typing_another_name_after_in_use_starts_that_name(tmp_path):
    labels, pairs = tmp_path / "labels", make_pairs()
    start(labels, pairs, "Sam")
    page = start(labels, pairs, "Sam")
    assert page.collector is None and shown(page.takeover_button)
    page.name.value = "Sam K"                                  # picks another name instead
    assert not shown(page.takeover_button)
    page.start_button.click()
    assert page.path == labels / "Sam-K.jsonl"
    assert label_files(labels) == ["Sam-K.jsonl", "Sam.jsonl"]


class AlwaysA:
    """A simulated annotator for pairs that are not the toy world's."""

    def prefer(self, prompt, response_a, response_b):
        return "A"


def test_the_autopilot_stops_when_the_name_is_taken_over(tmp_path):
    labels, pairs = tmp_path / "labels", make_pairs()
    first = start(labels, pairs, "ada", simulated=AlwaysA())
    assert first.collector.autopilot(2) == 2
    start(labels, pairs, "ADA").takeover_button.click()
    assert first.collector.autopilot(2) == 0 and first.collector.autopilot_button.disabled
    assert len(PreferenceStore(labels / "ada.jsonl").load()) == 2


def test_sam_and_sam_are_one_file_from_the_moment_start_is_pressed(tmp_path):
    labels, pairs = tmp_path / "labels", make_pairs()
    first = start(labels, pairs, "Sam")                        # Start, and not a click yet
    assert (labels / "Sam.jsonl").is_file()
    first.close()                                              # the page is closed: its name is free
    again = start(labels, pairs, "sam")
    assert again.collector is not None and again.path == labels / "Sam.jsonl" and again.annotator == "Sam"
    click(again, "A")
    assert label_files(labels) == ["Sam.jsonl"]


def page_process(labels: Path, name: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(PAGE), str(labels), name], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n", "the page process did not start"
    return proc


def ask(proc: subprocess.Popen, command: str) -> dict:
    proc.stdin.write(command + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def test_pages_pressing_start_at_once_with_two_spellings_share_one_file(tmp_path):
    labels = tmp_path / "labels"
    procs = [page_process(labels, name) for name in ("Sam", "sam", "SAM", "ｓａｍ")]     # the last one: fullwidth
    try:
        for proc in procs:                                     # all four press Start at the same moment
            proc.stdin.write("start\n")
            proc.stdin.flush()
        results = [json.loads(proc.stdout.readline()) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    started = [r for r in results if r["started"]]
    assert len(started) == 1, results
    assert all("is in use on another page" in r["message"] for r in results if not r["started"])
    (name,) = label_files(labels)
    assert Path(started[0]["path"]).name == name


def test_a_killed_page_leaves_its_name_free_and_its_clicks_saved(tmp_path):
    labels, pairs = tmp_path / "labels", make_pairs(3)
    proc = page_process(labels, "Sam")
    try:
        assert ask(proc, "start")["started"]
        assert ask(proc, "A")["recorded"] == [[pairs[0]["pair_id"], "A"]]
        assert start(labels, pairs, "sam").collector is None   # in use while that page lives
    finally:
        proc.kill()                                            # SIGKILL: no cleanup, as a killed kernel
        proc.wait()
    page = start(labels, pairs, "sam")                         # no takeover needed
    assert page.collector is not None and page.annotator == "Sam"
    assert "Welcome back" in page.message.value and "1 already labelled" in page.message.value
    click(page, "B")
    assert choices(labels / "Sam.jsonl") == [(pairs[0]["pair_id"], "A", "Sam"), (pairs[1]["pair_id"], "B", "Sam")]


@pytest.mark.parametrize("age_s, in_use", [(60, True), (claims.STALE_AFTER_S + 60, False)])
def test_a_claim_from_another_machine_expires_after_a_while(tmp_path, age_s, in_use):
    labels, pairs = tmp_path / "labels", make_pairs()
    claim = labels / claims.CLAIMS_DIR / f"{claims.name_key('Sam')}.json"
    claim.parent.mkdir(parents=True)
    claim.write_text(json.dumps({"name": "Sam", "token": "t", "pid": os.getpid(), "host": "not-" + socket.gethostname(),
                                 "since": "2026-01-01T10:00:00", "renewed": time.time() - age_s}))
    page = start(labels, pairs, "Sam")
    assert (page.collector is None) == in_use
    assert ("in use on another page (since 10:00:00)" in page.message.value) == in_use


def test_a_damaged_claim_file_does_not_lock_the_name_out(tmp_path):
    labels, pairs = tmp_path / "labels", make_pairs()
    claim = labels / claims.CLAIMS_DIR / f"{claims.name_key('Sam')}.json"
    claim.parent.mkdir(parents=True)
    claim.write_bytes(b'{"name": "Sam", "tok')                # a crash while it was written
    assert start(labels, pairs, "Sam").collector is not None


# -------------------------------------------------------------------------------------------- names
YORUBA = unicodedata.normalize("NFD", "Adéwálé Ọ̀ṣun")          # typed with combining tone marks


@pytest.mark.parametrize("typed, name", [
    ("प्रिया शर्मा", "प्रिया-शर्मा"),                                # Devanagari: vowel signs and a virama (marks)
    (YORUBA, unicodedata.normalize("NFC", "Adéwálé-Ọ̀ṣun")),
    ("Ａｄａ", "Ada"),                                           # fullwidth letters: NFKC
    ("王芳", "王芳"),
    ("محمد", "محمد"),
    ("Zoë", "Zoë"),
])
def test_names_in_any_script_are_accepted_after_normalisation(tmp_path, typed, name):
    assert clean_name(typed) == (name, "")
    page = start(tmp_path / "labels", make_pairs(), typed)
    click(page, "A")
    assert page.path == tmp_path / "labels" / f"{name}.jsonl" and page.annotator == name


def test_one_name_typed_two_ways_is_one_file(tmp_path):
    labels, pairs = tmp_path / "labels", make_pairs()
    composed, decomposed = (unicodedata.normalize(form, "Adéwálé Ọ̀ṣun") for form in ("NFC", "NFD"))
    assert composed != decomposed
    page = start(labels, pairs, composed)
    click(page, "A")
    page.close()
    assert start(labels, pairs, decomposed.upper()).path == page.path
    assert len(label_files(labels)) == 1


@pytest.mark.parametrize("typed, why", [
    ("a\\b", "cannot contain '\\\\': it would point outside the class folder"),
    ("..", "cannot contain '..'"),
    ("a..b", "cannot contain '..'"),
    ("a／b", "cannot contain '/'"),                                  # a fullwidth solidus is '/' after NFKC
    ("ada\x00", "invisible control characters (U+0000)"),
    ("a\x07b", "invisible control characters (U+0007)"),
    ("ada\u202egnp.exe", "invisible control characters (U+202E)"),   # right-to-left override
    ("\u0301ada", "must start with a letter or a digit"),            # a combining mark on nothing
])
def test_path_separators_dot_dot_and_control_characters_are_refused(tmp_path, typed, why):
    labels = tmp_path / "labels"
    page = start(labels, make_pairs(), typed)
    assert why in page.message.value, page.message.value
    assert page.collector is None and not labels.exists()
