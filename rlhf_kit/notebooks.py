"""One source for labs and solutions: `labs/*.ipynb` are generated from `solutions/*.ipynb`.

In a solution code cell, reference code sits between two marker comments:

    def sft_loss(logits, input_ids, response_mask):
        \"\"\"docstring stays\"\"\"
        # BEGIN SOLUTION
        ...reference code...
        # END SOLUTION

In the lab, each block (markers included) becomes, at the marker's indentation,

        # TODO: your code here (the exercise text above says what to compute)
        raise NotImplementedError

`# BEGIN SOLUTION stub: return None` puts `return None` in place of `raise NotImplementedError`, for
exercises that are not the body of a function. Cells tagged "solution-only" are left out of the lab, and
the lab carries no outputs or execution counts. The same solution always gives byte-identical labs, so
`build_labs(check=True)` can tell whether the committed labs are up to date.
"""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path

import nbformat

BEGIN_MARKER = "# BEGIN SOLUTION"
END_MARKER = "# END SOLUTION"
STUB_PREFIX = "stub:"
TODO_LINE = "# TODO: your code here (the exercise text above says what to compute)"
DEFAULT_STUB = "raise NotImplementedError"
SOLUTION_ONLY_TAG = "solution-only"


def _stub_source(source: str, where: str) -> str:
    """Replace every marked solution block in one cell's source with its stub.

    `where` ("name.ipynb, cell 3") prefixes the message of the ValueError raised for a block that is
    not closed, an END without a BEGIN, a nested BEGIN or a malformed BEGIN line.
    """
    out: list[str] = []
    block_start = None  # line number of the open BEGIN marker, if any
    for lineno, line in enumerate(source.split("\n"), start=1):
        stripped = line.strip()
        if stripped.startswith(BEGIN_MARKER):
            if block_start is not None:
                raise ValueError(f"{where}: line {lineno}: {BEGIN_MARKER} inside the block opened at line "
                                 f"{block_start}")
            rest = stripped[len(BEGIN_MARKER):].strip()
            if not rest:
                stub = DEFAULT_STUB
            elif rest.startswith(STUB_PREFIX) and rest[len(STUB_PREFIX):].strip():
                stub = rest[len(STUB_PREFIX):].strip()
            else:
                raise ValueError(f"{where}: line {lineno}: expected '{BEGIN_MARKER}' or "
                                 f"'{BEGIN_MARKER} {STUB_PREFIX} <code>', got {stripped!r}")
            indent = line[: len(line) - len(line.lstrip())]
            out += [indent + TODO_LINE, indent + stub]
            block_start = lineno
        elif stripped.startswith(END_MARKER):
            if block_start is None:
                raise ValueError(f"{where}: line {lineno}: {END_MARKER} without a {BEGIN_MARKER} before it")
            block_start = None
        elif block_start is None:
            out.append(line)
    if block_start is not None:
        raise ValueError(f"{where}: line {block_start}: {BEGIN_MARKER} is never closed by {END_MARKER}")
    return "\n".join(out)


def _clear_outputs(nb: nbformat.NotebookNode) -> bool:
    """Drop outputs, execution counts and saved widget state in place; True if anything was removed."""
    changed = nb.metadata.pop("widgets", None) is not None
    for cell in nb.cells:
        if cell.cell_type == "code":
            changed |= bool(cell.get("outputs")) or cell.get("execution_count") is not None
            cell.outputs = []
            cell.execution_count = None
    return changed


def lab_from_solution(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """The lab version of a solution notebook (a new notebook; `nb` is not modified).

    Solution blocks in code cells become stubs, cells tagged "solution-only" are dropped, and outputs
    are cleared. `name` only labels error messages: a ValueError names the notebook and cell index of a
    mismatched or unterminated marker.
    """
    lab = copy.deepcopy(nb)
    cells = []
    for index, cell in enumerate(lab.cells):
        if SOLUTION_ONLY_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        if cell.cell_type == "code":
            cell.source = _stub_source(cell.source, f"{name}, cell {index}")
        cells.append(cell)
    lab.cells = cells
    _clear_outputs(lab)
    return lab


def _render(nb: nbformat.NotebookNode) -> str:
    """The exact text nbformat.write produces for `nb`."""
    buffer = io.StringIO()
    nbformat.write(nb, buffer)
    return buffer.getvalue()


def _is_current(path: Path, text: str) -> bool:
    """True if `path` exists and holds the same notebook JSON as `text` (line endings may differ)."""
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")) == json.loads(text)
    except json.JSONDecodeError:
        return False


def build_labs(solutions_dir="solutions", labs_dir="labs", check=False) -> list[str]:
    """Generate `labs_dir/X.ipynb` from every `solutions_dir/X.ipynb`.

    Returns the sorted names of the lab notebooks that are out of date: missing, different from what
    their solution gives, or left over in `labs_dir` with no solution. With check=False those labs are
    rewritten (left-over ones deleted) and the names say what changed; with check=True nothing is written.
    """
    solutions_dir, labs_dir = Path(solutions_dir), Path(labs_dir)
    if not solutions_dir.is_dir():
        raise FileNotFoundError(f"no solutions directory at {solutions_dir}")
    solutions = sorted(solutions_dir.glob("*.ipynb"))
    stale = []
    for solution in solutions:
        lab = lab_from_solution(nbformat.read(solution, as_version=4), name=solution.name)
        text = _render(lab)
        target = labs_dir / solution.name
        if _is_current(target, text):
            continue
        stale.append(solution.name)
        if not check:
            labs_dir.mkdir(parents=True, exist_ok=True)
            with open(target, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
    expected = {solution.name for solution in solutions}
    for extra in sorted(labs_dir.glob("*.ipynb")):
        if extra.name not in expected:
            stale.append(extra.name)
            if not check:
                extra.unlink()
    return sorted(stale)


_CHECK_CALL = re.compile(r"""\bcheck\(\s*["']([a-z_0-9]+)["']""")


def learner_work(nb: nbformat.NotebookNode) -> dict:
    """What a learner writes in the lab made from solution notebook `nb`: {"lines": the non-blank lines inside
    solution blocks (the stubs' replacements), "exercises": the names passed to `check(...)`, in order}. The
    README's lab table and the course's targets (two checked exercises a lab) are counted with it."""
    lines, inside = 0, False
    exercises: list[str] = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        exercises += [name for name in _CHECK_CALL.findall(cell.source) if name not in exercises]
        for line in cell.source.split("\n"):
            stripped = line.strip()
            if stripped.startswith(BEGIN_MARKER):
                inside = True
            elif stripped.startswith(END_MARKER):
                inside = False
            elif inside and stripped and not stripped.startswith("#"):
                lines += 1
    return {"lines": lines, "exercises": exercises}
