"""The whole course as one command, and the headline figures each lab records.

    rlhf-kit course --preset lab --seed 0 [--labs 00-05] [--workspace DIR] [--json]

runs every solutions notebook in order, top to bottom, in one workspace (a fresh one unless `--workspace` names
one), as a learner would with Run All, and prints per lab its wall time, whether it passed, and its headline
figures. The notebooks record those figures themselves with `record("04", gold_sft=..., ...)`, a small JSON file
per lab in the workspace's `course/` folder, so the figures printed are the ones the learner saw; the executed
notebooks, outputs and all, are saved beside them. The last line
of `--json` output is one JSON object, with every finished stage's metrics beside the labs' figures: two runs
with the same preset and seed must give the same object apart from the timings (`comparable` drops them).

This module imports only the standard library at import time, so notebooks can `record` cheaply.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

COURSE_DIR = "course"                 # inside the workspace root: one <lab>.json of headline figures per lab
TIMING_KEYS = ("seconds", "train_seconds")
# The figures of the release runs (`rlhf-kit course` for seeds 0, 1 and 2, gathered by scripts/seed_table.py):
# {preset: {"seeds": [...], "labs": {lab: {figure: [one value per seed]}}}}. The README's seed table shows them.
TYPICAL_FILE = Path(__file__).with_name("typical_figures.json")


def solutions_dir() -> Path:
    """The repository's `solutions/` folder: the notebooks the course runs."""
    return Path(__file__).resolve().parents[1] / "solutions"


def notebooks(labs: list[str] | None = None, directory: Path | None = None) -> list[Path]:
    """The solutions notebooks of `labs` (two-digit numbers; all when None), in lab order."""
    directory = directory or solutions_dir()
    found = {path.name[:2]: path for path in sorted(directory.glob("[0-9][0-9]_*.ipynb"))}
    if labs is None:
        return [found[lab] for lab in sorted(found)]
    missing = [lab for lab in labs if lab not in found]
    if missing:
        raise ValueError(f"No notebook for lab(s) {', '.join(missing)} in {directory}; the labs there are "
                         f"{', '.join(sorted(found))}.")
    return [found[lab] for lab in labs]


def parse_labs(text: str) -> list[str]:
    """"00-05" -> ["00", ..., "05"]; "01,03" and "4" work too. ValueError, with the accepted forms, otherwise."""
    labs: list[str] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d{1,2})\s*(?:-\s*(\d{1,2})\s*)?", part)
        if match is None:
            raise ValueError(f"--labs {text!r}: expected lab numbers like 00-05, 01,03 or 4.")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if last < first:
            raise ValueError(f"--labs {text!r}: the range {part.strip()} runs backwards.")
        labs += [f"{n:02d}" for n in range(first, last + 1) if f"{n:02d}" not in labs]
    return labs


# ----------------------------------------------------------------------------------------- the figures
def record(lab: str, ws=None, quiet: bool = False, **figures) -> dict:
    """Add `figures` (name -> number or short text) to lab `lab`'s headline figures in the workspace
    (`<workspace>/course/<lab>.json`, merged with what the lab recorded earlier), and print each beside its typical
    value from the release runs of the same preset, where there is one (quiet=True: print nothing).
    Returns all the lab's figures."""
    if ws is None:
        from .workspace import Workspace

        ws = Workspace()
    path = Path(ws.root) / COURSE_DIR / f"{lab}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    recorded = json.loads(path.read_text()) if path.is_file() else {}
    recorded.update({key: _plain(value) for key, value in figures.items()})
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(recorded, indent=1) + "\n")
    tmp.replace(path)
    if not quiet:
        print(beside_typical(lab, {key: recorded[key] for key in figures}, ws.preset.name))
    return recorded


def _release(preset: str) -> dict:
    """{"seeds": [...], "labs": {lab: {figure: [values]}}} of the release runs in `preset`; {} where there are none."""
    return json.loads(TYPICAL_FILE.read_text()).get(preset, {}) if TYPICAL_FILE.is_file() else {}


def typical(lab: str, preset: str) -> dict[str, list]:
    """{figure: [its value in each release run]} for lab `lab` in `preset`; {} where none were recorded."""
    return _release(preset).get("labs", {}).get(lab, {})


def beside_typical(lab: str, figures: dict, preset: str) -> str:
    """One line per figure: "ppo_gold: yours 1.93 | typically 1.95 (1.90 to 2.02 over seeds 0-2)"."""
    release = _release(preset)
    known = release.get("labs", {}).get(lab, {})
    lines = []
    for key, value in figures.items():
        values = [v for v in known.get(key, []) if isinstance(v, (int, float))]
        line = f"{key}: yours {_show(value)}"
        if values and isinstance(value, (int, float)):
            seeds = release.get("lab_seeds", {}).get(lab, release["seeds"])
            line += (f" | typically {_show(sum(values) / len(values))} ({_show(min(values))} to "
                     f"{_show(max(values))} over seeds {', '.join(map(str, seeds))}, {preset} preset)")
        lines.append(line)
    if not known:
        lines.append(f"(no release figures for the {preset!r} preset to compare with)")
    return "\n".join(lines)


def _show(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _plain(value):
    """Numbers rounded to 4 decimals (torch/numpy scalars included); other values as they are."""
    if hasattr(value, "item"):
        value = value.item()
    return round(value, 4) if isinstance(value, float) else value


def headlines(root) -> dict[str, dict]:
    """{lab: figures} recorded in the workspace root `root`."""
    folder = Path(root) / COURSE_DIR
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def stage_metrics(root) -> dict[str, dict]:
    """{stage: its DONE.json} for every finished stage under the workspace root `root`."""
    from .workspace import DONE_FILE, STAGES

    out = {}
    for stage in STAGES:
        done = Path(root) / stage / DONE_FILE
        if done.is_file():
            out[stage] = json.loads(done.read_text())
    return out


def comparable(result: dict) -> dict:
    """`result` without wall times, workspace paths or anything else that may differ between two runs of the
    same course: what must be identical when the preset and seed are."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in TIMING_KEYS and k != "workspace"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip({"labs": result["labs"], "stages": result["stages"]})


# --------------------------------------------------------------------------------------------- the run
def run_notebook(path: Path, timeout: float | None = None, save_to: Path | None = None) -> tuple[bool, str]:
    """Execute the notebook at `path` top to bottom in a fresh kernel, in its own folder, and write the executed
    notebook, outputs and all, to `save_to` if given (what the learner would have seen, failed or not).
    Returns (passed, "" or "cell N: ErrorName: message")."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
        outcome = (True, "")
    except CellExecutionError as error:
        cell = next((i for i, c in enumerate(nb.cells) if any(o.get("output_type") == "error"
                                                              for o in c.get("outputs", []))), "?")
        outcome = (False, f"cell {cell}: {error.ename}: {error.evalue}"[:500])
    except Exception as error:                   # a dead kernel or a time-out: say which, go on with the next lab
        outcome = (False, f"{type(error).__name__}: {error}"[:500])
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, save_to)
    return outcome


def run_course(preset: str | None = None, seed: int = 0, labs: list[str] | None = None, home=None,
               timeout: float | None = None, progress=print, directory=None) -> dict:
    """Run the solutions notebooks of `labs` (default: all) in order in the workspace `home` (default: a fresh
    temporary folder) with this preset and seed, the way a learner's kernel would see them
    (RLHF_KIT_PRESET, RLHF_KIT_SEED and RLHF_KIT_HOME set). A failing lab is reported and the next one runs.
    `directory` holds the notebooks (default: the repository's solutions/).

    Returns {"preset", "seed", "workspace", "passed", "seconds",
             "labs": [{"lab", "notebook", "passed", "seconds", "error", "figures"}], "stages": {stage: metrics}}.
    """
    from .presets import get_preset
    from .workspace import Workspace, check_seed

    preset_name, seed = get_preset(preset).name, check_seed(seed)
    paths = notebooks(labs, Path(directory) if directory is not None else None)
    home = Path(home) if home is not None else Path(tempfile.mkdtemp(prefix="rlhf-kit-course-"))
    ws = Workspace(preset_name, home, seed)
    env = {"RLHF_KIT_PRESET": preset_name, "RLHF_KIT_SEED": str(seed), "RLHF_KIT_HOME": str(home),
           "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)                      # the kernels inherit these
    progress(f"course: preset {preset_name}, seed {seed}, workspace {ws.root}")
    rows, started = [], time.perf_counter()
    try:
        for path in paths:
            lab = path.name[:2]
            lab_started = time.perf_counter()
            passed, error = run_notebook(path, timeout, save_to=ws.root / COURSE_DIR / path.name)
            seconds = round(time.perf_counter() - lab_started, 1)
            figures = headlines(ws.root).get(lab, {})
            rows.append({"lab": lab, "notebook": path.name, "passed": passed, "seconds": seconds, "error": error,
                         "figures": figures})
            progress(f"lab {lab}  {'passed' if passed else 'FAILED'}  {seconds:7.1f} s  "
                     + "  ".join(f"{k}={v}" for k, v in figures.items()) + (f"\n    {error}" if error else ""))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return {"preset": preset_name, "seed": seed, "workspace": str(ws.root),
            "passed": all(row["passed"] for row in rows), "seconds": round(time.perf_counter() - started, 1),
            "labs": rows, "stages": stage_metrics(ws.root)}
