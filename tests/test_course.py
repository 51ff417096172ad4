"""`rlhf-kit course` and the headline figures the labs record (rlhf_kit.course)."""

import json

import nbformat
import pytest

from rlhf_kit import course
from rlhf_kit.cli import main
from rlhf_kit.workspace import SEED_VAR, Workspace, default_seed


def test_parse_labs():
    assert course.parse_labs("00-05") == ["00", "01", "02", "03", "04", "05"]
    assert course.parse_labs("1,3") == ["01", "03"]
    assert course.parse_labs("04") == ["04"]
    assert course.parse_labs("2-3,3") == ["02", "03"]
    for bad in ("05-03", "a", "1-", ""):
        with pytest.raises(ValueError, match="--labs"):
            course.parse_labs(bad)


def test_notebooks_are_the_solutions_in_lab_order():
    names = [path.name for path in course.notebooks()]
    assert names == sorted(names) and names[0].startswith("00_") and len(names) >= 6
    assert [p.name[:2] for p in course.notebooks(["03", "01"])] == ["03", "01"]
    with pytest.raises(ValueError, match="No notebook for lab"):
        course.notebooks(["42"])


def test_record_merges_figures_and_headlines_reads_them(tmp_path):
    ws = Workspace("ci", tmp_path, seed=3)
    course.record("04", ws, gold=2.123456, kl=1)
    assert course.record("04", ws, gold=2.5)["kl"] == 1
    course.record("01", ws, sft_gold=1.0)
    assert course.headlines(ws.root) == {"01": {"sft_gold": 1.0}, "04": {"gold": 2.5, "kl": 1}}


def test_comparable_drops_only_timings_and_paths():
    result = {"workspace": "/tmp/x", "labs": [{"lab": "00", "seconds": 3.0, "figures": {"gold": 1.0}}],
              "stages": {"sft": {"gold_after": 1.5, "seconds": 9.0, "train_seconds": 8.0}}}
    assert course.comparable(result) == {"labs": [{"lab": "00", "figures": {"gold": 1.0}}],
                                         "stages": {"sft": {"gold_after": 1.5}}}


def test_seed_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(SEED_VAR, "2")
    assert default_seed() == 2 and Workspace("ci", tmp_path).seed == 2
    assert Workspace("ci", tmp_path, seed=5).seed == 5            # an explicit seed wins
    for bad in ("-1", "x", "1.5"):
        monkeypatch.setenv(SEED_VAR, bad)
        with pytest.raises(ValueError, match=SEED_VAR):
            Workspace("ci", tmp_path)


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.mark.slow
def test_run_course_runs_labs_in_order_with_the_seed_and_reports_failures(tmp_path, monkeypatch):
    notebooks = tmp_path / "nbs"
    notebooks.mkdir()
    _notebook(notebooks / "00_first.ipynb",
              "import os\nfrom rlhf_kit.course import record\nfrom rlhf_kit.workspace import Workspace\n"
              "ws = Workspace()\nrecord('00', seed=ws.seed, preset=ws.preset.name)")
    _notebook(notebooks / "01_second.ipynb", "from rlhf_kit.course import record\nrecord('01', reached=1)",
              "assert False, 'the demo did not happen'", "record('01', after_the_failure=1)")
    _notebook(notebooks / "02_third.ipynb", "from rlhf_kit.course import record\nrecord('02', ran=True)")
    monkeypatch.delenv("RLHF_KIT_SEED", raising=False)
    lines = []
    result = course.run_course("ci", 7, home=tmp_path / "ws", directory=notebooks, timeout=120,
                               progress=lines.append)
    assert [row["lab"] for row in result["labs"]] == ["00", "01", "02"]
    assert [row["passed"] for row in result["labs"]] == [True, False, True] and not result["passed"]
    assert result["labs"][0]["figures"] == {"seed": 7, "preset": "ci"}
    assert result["labs"][1]["figures"] == {"reached": 1}          # nothing after the failing cell ran
    assert "cell 1: AssertionError: the demo did not happen" in result["labs"][1]["error"]
    assert result["workspace"].endswith("ci-seed7") and "RLHF_KIT_SEED" not in __import__("os").environ
    assert any("FAILED" in line and "lab 01" in line for line in lines)
    saved = nbformat.read(tmp_path / "ws" / "ci-seed7" / "course" / "01_second.ipynb", as_version=4)
    assert saved.cells[1].outputs[0]["ename"] == "AssertionError"      # what the learner saw, failure included


def test_cli_course_rejects_bad_arguments_before_running(capsys):
    assert main(["course", "--labs", "42", "--preset", "ci"]) == 2
    assert "No notebook for lab(s) 42" in capsys.readouterr().err
    assert main(["course", "--seed", "-1", "--preset", "ci"]) == 2
    assert "--seed must be a whole number" in capsys.readouterr().err


def test_beside_typical_names_the_seeds_that_ran_each_lab(tmp_path, monkeypatch):
    """A lab added after the release runs (its own `--labs` runs, fewer seeds) says over which seeds its typical
    figures are, not the whole course's."""
    path = tmp_path / "typical.json"
    path.write_text(json.dumps({"lab": {"seeds": [0, 1, 2], "lab_seeds": {"06": [1, 2]},
                                        "labs": {"05": {"gold": [1.0, 2.0, 3.0]}, "06": {"gold": [2.0, 4.0]}}}}))
    monkeypatch.setattr(course, "TYPICAL_FILE", path)
    assert course.beside_typical("05", {"gold": 2.5}, "lab") == (
        "gold: yours 2.5 | typically 2 (1 to 3 over seeds 0, 1, 2, lab preset)")
    assert course.beside_typical("06", {"gold": 2.5}, "lab") == (
        "gold: yours 2.5 | typically 3 (2 to 4 over seeds 1, 2, lab preset)")
