"""Root pytest configuration, for the notebooks under solutions/ and labs/ (tests/ has its own conftest).

- nbval waits at most 5 seconds (a constant, `IPyNbCell.output_timeout`, with no option) for each output message
  after a cell's reply; on a loaded 2-core machine the kernel's output thread can lag that far behind a long
  training cell, and CI once failed lab 01's SFT cell on that wait alone ("Timeout of 5 seconds exceeded waiting
  for output") though the cell had finished. The wait is raised here; a cell that really hangs is still caught
  by CI's limit.
- The browser tests (tests/test_browser.py) run last, after the notebooks have built the ci workspace they open.
- When a run executes solutions/ before labs/ (`make test` does), the solutions/ kernels start with
  $RLHF_KIT_REUSE_BUILT=record and the labs/ kernels with =1: the labs/ notebooks' `ws.build(...)` calls return the
  stages the solutions/ notebooks have just built with the same kit code (replaying each stage's recorded curve),
  and their sweeps and TRL comparisons return the results the solutions/ kernels kept (`rlhf_kit.reuse`), instead
  of training them again. What the labs/ copies add, that every cell runs with the exercise stubs falling back to
  the references, is still run and asserted. `pytest labs/` alone builds as a learner's kernel does.
"""

import os
from pathlib import Path

import pytest

from rlhf_kit.reuse import RECORD, REUSE_VAR

NBVAL_OUTPUT_TIMEOUT_S = 120
ROOT = Path(__file__).resolve().parent
_LABS_REUSE = pytest.StashKey[bool]()


def _notebook_folder(item) -> str | None:
    """"solutions" or "labs" for a cell of a notebook in those folders (nbval's items), else None."""
    if not hasattr(item, "output_timeout"):
        return None
    folder = Path(str(item.path)).resolve().parent
    return folder.name if folder.parent == ROOT and folder.name in ("solutions", "labs") else None


def pytest_collection_modifyitems(config, items):
    # the browser tests last: by then the notebooks have built the ci workspace their JupyterLab kernels open
    # (labs 02, 04, 05), which they would otherwise build themselves, under their time limit
    items[:] = sorted(items, key=lambda item: Path(str(item.path)).name == "test_browser.py")
    for item in items:
        if hasattr(item, "output_timeout"):       # nbval's notebook cells
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT_S
    folders = [_notebook_folder(item) for item in items]
    config.stash[_LABS_REUSE] = ("solutions" in folders and "labs" in folders
                                 and folders.index("solutions") < folders.index("labs"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before nbval starts a notebook's kernel (in the setup of its first cell): $RLHF_KIT_REUSE_BUILT, "record" for
    solutions/ and "1" for labs/ when both run, solutions/ first; unset for everything else."""
    mode = {"solutions": RECORD, "labs": "1"}.get(_notebook_folder(item))
    if mode and item.config.stash.get(_LABS_REUSE, False):
        os.environ[REUSE_VAR] = mode
    else:
        os.environ.pop(REUSE_VAR, None)
