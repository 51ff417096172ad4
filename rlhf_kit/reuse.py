"""The test suite's `labs/` pass reuses the runs its `solutions/` pass made, instead of training them again.

`make test` runs every notebook twice: solutions/ (the learner's functions written out) and labs/ (the exercise
stubs, which fall back to the kit's references). What the labs/ copies add is that every cell runs with the stubs;
the sweeps and comparisons they train are the solutions' runs again, with the same settings. The root conftest
starts the solutions/ kernels with $RLHF_KIT_REUSE_BUILT=record and the labs/ kernels with =1 (only when a run
holds both, solutions first). A function decorated with `@reusable`:

- unset (a learner, `rlhf-kit course`, `pytest labs/` alone): runs, nothing else;
- "record": runs and keeps its result in `<workspace>/.reused/<name>-<key>.pt`;
- "1": returns the kept result of a call with the same arguments, saying so, else runs.

The key is the function's name, its arguments (functions and other callables count by kind only: a learner's
`dpo_loss` and the reference it falls back to are the same argument; an object with a `.path`, such as a reward
model, by its path) and the DONE.json of the stages every run starts from (world to reward), so a rebuilt chain is
never served an old result. `$RLHF_KIT_REUSE_BUILT=1` also makes `Workspace.build` return built stages
(`Workspace._reuse`).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Callable

from .workspace import DONE_FILE, REUSE_VAR, Workspace

RECORD = "record"
FOLDER = ".reused"
CHAIN = ("world", "base", "sft", "preferences", "reward")   # the stages whose records are part of every key


def _describe(value):
    """A JSON-able stand-in for an argument, the same in both passes for the same run."""
    if isinstance(value, Workspace):
        return f"workspace {value.root.name}"
    if isinstance(value, Path):
        return str(value)
    if isinstance(getattr(value, "path", None), (str, Path)):          # a RewardScorer: its model's folder
        return f"{type(value).__name__} at {value.path}"
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _describe(getattr(value, f.name)) for f in fields(value)}
    if callable(value):
        return "a function"
    if isinstance(value, dict):
        return {str(k): _describe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def _root(arguments: dict) -> Path:
    """The workspace folder the call works in: its Workspace argument's, else the one a stage-folder argument is
    in, else the environment's (`Workspace()`)."""
    for value in arguments.values():
        if isinstance(value, Workspace):
            return value.root
    for value in arguments.values():
        if isinstance(value, (str, Path)) and (Path(value) / DONE_FILE).is_file():
            return Path(value).parent
    return Workspace().root


def key_of(name: str, arguments: dict, root: Path, needs=CHAIN) -> str:
    chain = {stage: (root / stage / DONE_FILE).read_text() if (root / stage / DONE_FILE).is_file() else None
             for stage in needs}
    text = json.dumps({"name": name, "arguments": _describe(arguments), "chain": chain}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def reusable(fn: Callable | None = None, *, save: Callable | None = None, load: Callable | None = None,
             needs: tuple[str, ...] = CHAIN):
    """Decorator: under $RLHF_KIT_REUSE_BUILT (set by the test suite, see the module's text), keep the result
    ("record") or return the kept one ("1"). `save(result, folder)` and `load(folder)` for a result torch.save
    cannot keep (a model: save_pretrained); default: torch.save / torch.load of the result. `needs`: the stages
    whose records are part of the key (default the whole chain; lab 01's TRL SFT reads the base model only, and
    the stages after it are rebuilt between the two passes' calls)."""
    if fn is None:
        return lambda f: reusable(f, save=save, load=load, needs=needs)
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        mode = os.environ.get(REUSE_VAR)
        if mode not in (RECORD, "1"):
            return fn(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        root = _root(bound.arguments)
        path = root / FOLDER / f"{fn.__name__}-{key_of(fn.__name__, bound.arguments, root, needs)}"
        if mode == "1" and (path / "DONE").is_file():
            print(f"{fn.__name__}: reusing the result the solutions/ notebooks computed with these settings "
                  f"(${REUSE_VAR}=1, set by the test suite's labs/ pass), not running it again.", flush=True)
            return load(path) if load else _torch_load(path / "result.pt")
        result = fn(*args, **kwargs)
        if mode == RECORD:
            path.mkdir(parents=True, exist_ok=True)
            save(result, path) if save else _torch_save(result, path / "result.pt")
            (path / "DONE").write_text(fn.__qualname__ + "\n")
        return result

    return wrapper


def _torch_save(result, path: Path) -> None:
    import torch

    torch.save(result, path)


def _torch_load(path: Path):
    import torch

    return torch.load(path, weights_only=False)


# ------------------------------------------------------------------------- results holding a trained model
def save_trained(result, folder: Path) -> None:
    """(model, tokenizer, training loss), as TRL's comparisons return them: the model and tokenizer with
    save_pretrained, the loss as JSON."""
    model, tokenizer, loss = result
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    (folder / "loss.json").write_text(json.dumps(loss) + "\n")


def load_trained_lm(folder: Path):
    from .models import load_causal_lm

    model, tokenizer = load_causal_lm(folder / "model")
    return model.eval(), tokenizer, json.loads((folder / "loss.json").read_text())


def load_trained_reward_model(folder: Path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from .models import disable_dropout

    model = AutoModelForSequenceClassification.from_pretrained(folder / "model", local_files_only=True)
    disable_dropout(model)
    tokenizer = AutoTokenizer.from_pretrained(folder / "model", local_files_only=True)
    return model.eval(), tokenizer, json.loads((folder / "loss.json").read_text())
