"""Labs are generated from solutions: stubs replace marked blocks, outputs go, staleness is detected."""

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from rlhf_kit.notebooks import build_labs, lab_from_solution

FUNCTION_CELL = '''\
def sft_loss(logits, input_ids, response_mask):
    """Mean cross-entropy over response tokens."""
    # BEGIN SOLUTION
    reference_secret = logits.sum()
    return reference_secret
    # END SOLUTION
'''

METHOD_CELL = '''\
class Critic:
    def value(self, x):
        if x is None:
            # BEGIN SOLUTION
            method_secret = 0
            return method_secret
            # END SOLUTION
        return x
'''

STUB_CELL = '''\
n_epochs = 3
# BEGIN SOLUTION stub: learning_rate = None
learning_rate = 1e-4 * stub_secret
# END SOLUTION
print(n_epochs, learning_rate)'''


def solution_notebook():
    """A solution notebook exercising every feature of the lab builder."""
    executed = new_code_cell("print('hi')", execution_count=7,
                             outputs=[new_output("stream", name="stdout", text="hi\n")])
    cells = [
        new_markdown_cell("# Lab\nImplement `sft_loss`."),
        new_code_cell(FUNCTION_CELL),
        new_code_cell(METHOD_CELL),
        new_code_cell(STUB_CELL),
        new_markdown_cell("Reference walk-through.", metadata={"tags": ["solution-only"]}),
        executed,
    ]
    for i, cell in enumerate(cells):
        cell.id = f"cell-{i}"
    return new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                              "language": "python"}})


def write_solutions(directory, names=("01_sft.ipynb",)):
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        nbformat.write(solution_notebook(), directory / name)


def test_lab_has_stubs_and_no_solution():
    solution = solution_notebook()
    lab = lab_from_solution(solution)
    sources = [cell.source for cell in lab.cells]
    code = [cell.source for cell in lab.cells if cell.cell_type == "code"]

    assert len(lab.cells) == len(solution.cells) - 1
    assert "Reference walk-through." not in sources
    assert sources[0] == "# Lab\nImplement `sft_loss`."
    assert code[0] == (
        "def sft_loss(logits, input_ids, response_mask):\n"
        '    """Mean cross-entropy over response tokens."""\n'
        "    # TODO: your code here (the exercise text above says what to compute)\n"
        "    raise NotImplementedError\n"
    )
    assert "            # TODO: your code here" in code[1]
    assert "            raise NotImplementedError\n        return x" in code[1]
    assert "# TODO: your code here (the exercise text above says what to compute)\nlearning_rate = None\n" in code[2]
    assert code[2].endswith("print(n_epochs, learning_rate)")
    for i, src in enumerate(code):
        assert "secret" not in src and "SOLUTION" not in src
        compile(src, f"cell {i}", "exec")
    for cell in lab.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    assert solution.cells[-1].outputs, "the solution notebook itself is left as it was"


@pytest.mark.parametrize("source, problem", [
    ("x = 1\n# BEGIN SOLUTION\nx = 2", "never closed"),
    ("x = 1\n# END SOLUTION", "without"),
    ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION", "inside"),
    ("# BEGIN SOLUTION stub:\n# END SOLUTION", "expected"),
])
def test_bad_markers_name_notebook_and_cell(source, problem):
    nb = new_notebook(cells=[new_markdown_cell("intro"), new_code_cell(source)])
    with pytest.raises(ValueError, match=rf"02_rm\.ipynb, cell 1: .*{problem}"):
        lab_from_solution(nb, name="02_rm.ipynb")


def test_build_is_deterministic(tmp_path):
    write_solutions(tmp_path / "solutions", ["01_sft.ipynb", "02_rm.ipynb"])
    labs = tmp_path / "labs"

    assert build_labs(tmp_path / "solutions", labs) == ["01_sft.ipynb", "02_rm.ipynb"]
    first = (labs / "01_sft.ipynb").read_bytes()
    assert build_labs(tmp_path / "solutions", labs) == []
    (labs / "01_sft.ipynb").unlink()
    assert build_labs(tmp_path / "solutions", labs) == ["01_sft.ipynb"]
    assert (labs / "01_sft.ipynb").read_bytes() == first
    assert nbformat.read(labs / "01_sft.ipynb", as_version=4).cells[-1].outputs == []


def test_check_reports_stale_missing_and_extra_without_writing(tmp_path):
    solutions, labs = tmp_path / "solutions", tmp_path / "labs"
    write_solutions(solutions, ["01_sft.ipynb", "02_rm.ipynb", "03_ppo.ipynb"])
    build_labs(solutions, labs)
    assert build_labs(solutions, labs, check=True) == []

    nb = nbformat.read(solutions / "01_sft.ipynb", as_version=4)
    nb.cells[0].source += "\nA new sentence."
    nbformat.write(nb, solutions / "01_sft.ipynb")
    (labs / "02_rm.ipynb").unlink()
    (labs / "99_old.ipynb").write_text((labs / "03_ppo.ipynb").read_text())
    before = {path.name: path.read_bytes() for path in labs.iterdir()}

    assert build_labs(solutions, labs, check=True) == ["01_sft.ipynb", "02_rm.ipynb", "99_old.ipynb"]
    assert {path.name: path.read_bytes() for path in labs.iterdir()} == before

    assert build_labs(solutions, labs) == ["01_sft.ipynb", "02_rm.ipynb", "99_old.ipynb"]
    assert sorted(path.name for path in labs.iterdir()) == ["01_sft.ipynb", "02_rm.ipynb", "03_ppo.ipynb"]
    assert build_labs(solutions, labs, check=True) == []


def test_every_lab_has_two_checked_exercises_and_the_learner_writes_100_lines():
    """Issue 12's target, counted the way the README's lab table is: at least two checked exercises in every
    lab (the later ones included), and at least 100 lines of the learner's own code in labs 00-05."""
    from rlhf_kit.notebooks import learner_work
    work = {path.name[:2]: learner_work(nbformat.read(path, as_version=4))
            for path in sorted((Path(__file__).parent.parent / "solutions").glob("[0-9][0-9]_*.ipynb"))}
    assert sorted(work)[:7] == ["00", "01", "02", "03", "04", "05", "06"]
    few = {lab: w["exercises"] for lab, w in work.items() if len(w["exercises"]) < 2}
    assert not few, f"labs with fewer than two checked exercises: {few}"
    total = sum(w["lines"] for lab, w in work.items() if lab <= "05")
    assert total >= 100, f"the learner writes {total} lines in labs 00-05: {work}"


def test_learner_work_counts_solution_lines_and_checks():
    from rlhf_kit.notebooks import learner_work
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("def f(x):\n    # BEGIN SOLUTION\n    # a comment\n    y = x\n\n"
                                          "    return y\n    # END SOLUTION\nf = check('f_ex', f)"),
                nbformat.v4.new_markdown_cell("check('not_code', f)")]
    assert learner_work(nb) == {"lines": 2, "exercises": ["f_ex"]}
