"""The workspace: one directory holding every stage's artefacts, and `ensure(stage)` to hand them between labs.

Layout: `<home>/<preset>-seed<seed>/<stage>/`, where home is $RLHF_KIT_HOME or, by default, the git-ignored
`workspace/` folder of the repository; a preset with overrides has its own folder, `<preset>+<hash>-seed<seed>`
(see `Preset.key`). A stage directory counts as finished only when it holds `DONE.json` (its metrics, the preset
values and the builder's arguments). Stages are built in a temporary sibling directory and renamed into place at
the very end, so an interrupted run leaves no half-written artefact that could be mistaken for a finished one.

Rebuilding a stage removes the stages built from its old version, never the learner's own labels (`labels/`,
`classroom/`); `stale.json` remembers what the removed stages were built with, so that `ensure` trains the reward
model on the same label files again.

    from rlhf_kit.workspace import ensure
    sft_dir = ensure("sft")      # builds world -> base -> sft if any is missing, with progress bars
"""

from __future__ import annotations

import inspect
import json
import numbers
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import fields, is_dataclass
from importlib import import_module
from pathlib import Path
from typing import Callable

from .presets import Preset, get_preset

ENV_VAR = "RLHF_KIT_HOME"
SEED_VAR = "RLHF_KIT_SEED"
DONE_FILE = "DONE.json"
CURVE_FILE = "curve.json"       # what `build` passed to its callback: [{"step": ..., metric: value, ...}, ...]
# Set to 1 by the test suite for its labs/ pass only (root conftest.py): `build` then returns a stage that is already
# built instead of training it again, replaying its recorded curve. The solutions/ pass has just built every stage
# with the same kit code; what the labs/ copies add is that they run with the exercise stubs' fallback.
REUSE_VAR = "RLHF_KIT_REUSE_BUILT"
STALE_FILE = "stale.json"       # {removed stage: {"built_from_old": stage, "inputs": its recorded inputs}}
# The learner's own labels (lab 02's labels/you.jsonl, the classroom's classroom/<name>.jsonl): no build removes them.
LABEL_DIRS = ("labels", "classroom")


class WorkspaceError(RuntimeError):
    """A stage artefact is missing or incomplete."""


def default_home() -> Path:
    """$RLHF_KIT_HOME, else `workspace/` in the repository checkout, else ~/.cache/rlhf-kit."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    repo = Path(__file__).resolve().parents[1]
    if (repo / "pyproject.toml").exists():
        return repo / "workspace"
    return Path.home() / ".cache" / "rlhf-kit"


def home_problem(home) -> str | None:
    """Why `home` cannot hold a workspace, in one line naming the path; None when it can: it is a folder this user
    can write in, or it can be created (its nearest existing parent is such a folder)."""
    home = Path(home).expanduser()
    existing = home
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    fix = f"set ${ENV_VAR} (or --workspace) to a folder you can write in"
    if not existing.is_dir():
        where = "is a file" if existing == home else f"cannot be created, because {existing} is a file"
        return f"the workspace home {home} {where}, not a folder: {fix}."
    if not _writable(existing):
        where = "" if existing == home else f" (it would be created in {existing})"
        return f"the workspace home {home} is not writable by this user{where}: {fix}."
    return None


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def check_seed(seed, source: str = "seed") -> int:
    """`seed` as an int in [0, 2**32), or a ValueError naming `source` and the accepted values."""
    try:
        value = int(seed)
        if value != float(seed):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{source} must be a whole number from 0 to {2**32 - 1}; got {seed!r}.") from None
    if not 0 <= value < 2**32:
        raise ValueError(f"{source} must be a whole number from 0 to {2**32 - 1}; got {seed!r}.")
    return value


def default_seed() -> int:
    """$RLHF_KIT_SEED, else 0: the seed of every notebook's workspace, so the course can run with another one."""
    text = os.environ.get(SEED_VAR, "").strip()
    return check_seed(text, f"${SEED_VAR}") if text else 0


# Each stage: the stages it needs, and the module whose `build(ws, out_dir, **kwargs) -> metrics` builds it
# ("module:function" for another function of the module). Modules are imported lazily so that importing the
# workspace stays cheap. Lab 08 ranks the policies: base, sft, ppo, hacked (PPO at beta 0), dpo, grpo, grpo-ai.
STAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "world": ((), "world"),
    "base": (("world",), "pretrain"),
    "sft": (("base",), "sft"),
    "preferences": (("sft",), "collect"),
    "reward": (("preferences",), "reward"),
    "ppo": (("reward",), "ppo"),
    "dpo": (("reward",), "dpo"),
    "grpo": (("reward",), "grpo"),
    "hacked": (("reward",), "hacking"),
    "ai-reward": (("reward",), "judge"),
    "grpo-ai": (("ai-reward",), "grpo:build_ai"),
}

# The preset fields each stage is built from (names or name prefixes). A finished stage records the values of its
# own fields and of every stage before it; `ensure` rebuilds it when they no longer match the preset.
STAGE_SETTINGS: dict[str, tuple[str, ...]] = {
    "world": ("n_corpus_docs", "n_demos", "n_heldout"),
    "base": ("vocab_size", "n_layer", "n_head", "n_embd", "n_positions", "pretrain_"),
    "sft": ("sft_", "max_new_tokens", "eval_temperature"),
    "preferences": ("n_pref_prompts", "pref_"),
    "reward": ("rm_",),
    "ppo": ("ppo_",),
    "dpo": ("dpo_",),
    "grpo": ("ppo_", "grpo_"),
    "hacked": ("ppo_",),
    "ai-reward": ("rm_",),
    "grpo-ai": ("ppo_", "grpo_"),
}

# What a learner runs to (re)build a stage by hand, and the lab that builds it (`ppo`, `hacked`, `dpo`, `grpo` and
# `grpo-ai` are recorded by labs 05-07 from their own runs when those have the stage's settings, `Workspace.record`;
# lab 08 ensures them and the rest).
COMMANDS = {"world": "pretrain", "base": "pretrain", "sft": "sft", "preferences": "collect --simulated",
            "reward": "reward", "ppo": "ppo", "dpo": "dpo", "grpo": "grpo", "hacked": "build hacked",
            "ai-reward": "build ai-reward", "grpo-ai": "build grpo-ai"}
LABS = {"world": "00", "base": "00", "sft": "01", "preferences": "02", "reward": "03"}


def _builder(stage: str) -> Callable:
    module, _, function = STAGES[stage][1].partition(":")
    return getattr(import_module(f"rlhf_kit.{module}"), function or "build")


class Workspace:
    """The artefacts of one preset and seed (default: $RLHF_KIT_SEED, else 0)."""

    def __init__(self, preset: str | Preset | None = None, home: str | os.PathLike | None = None,
                 seed: int | None = None):
        self.preset = get_preset(preset)
        self.seed = default_seed() if seed is None else check_seed(seed)
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.root = self.home / f"{self.preset.key}-seed{self.seed}"

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    def path(self, stage: str) -> Path:
        _check_stage(stage)
        return self.root / stage

    def is_done(self, stage: str) -> bool:
        return self.done_record(stage)[0] is not None

    def done_record(self, stage: str) -> tuple[dict | None, str]:
        """(what the stage's DONE.json records, "") for a finished stage; (None, "") when it has no DONE.json;
        (None, what is wrong with it) when it is damaged (truncated, garbage, not a JSON object, or its
        "settings"/"inputs" not objects): such a stage counts as unfinished, and `ensure` rebuilds it."""
        path = self.path(stage) / DONE_FILE
        try:
            record = json.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            return None, ""
        except OSError as error:                          # e.g. a folder named DONE.json, or unreadable
            return None, f"cannot be read ({error.strerror or error})"
        except ValueError as error:                       # JSONDecodeError (truncated, garbage), UnicodeDecodeError
            return None, f"is not valid JSON ({error})"
        if not isinstance(record, dict):
            return None, f"holds {_json_type(record)}, not a JSON object"
        for key in ("settings", "inputs"):
            if record.get(key) is not None and not isinstance(record[key], dict):
                return None, f"has {_json_type(record[key])} as {key!r}, not a JSON object"
        return record, ""

    def require(self, stage: str) -> Path:
        """The finished directory of `stage`, or a WorkspaceError that says what to run."""
        path = self.path(stage)
        fix = (f"Run `rlhf-kit {COMMANDS[stage]} --preset {self.preset.name} --seed {self.seed}`, "
               f"or `ensure({stage!r})` in a notebook, to build it.")
        if self.preset.overrides():      # the command line knows the named presets only
            overrides = ", ".join(f"{k}={v!r}" for k, v in self.preset.overrides().items())
            fix = (f"Run `.ensure({stage!r})` on this workspace (preset {self.preset.name!r} with {overrides}) "
                   f"to build it.")
        if not path.exists():
            raise WorkspaceError(f"The {stage!r} artefact is missing: {path} does not exist. {fix}")
        _, problem = self.done_record(stage)
        if problem:
            raise WorkspaceError(f"The {stage!r} artefact at {path} is damaged: {path / DONE_FILE} {problem}. This "
                                 f"stage will be rebuilt by `ensure({stage!r})`; or {fix[0].lower()}{fix[1:]}")
        if not self.is_done(stage):
            raise WorkspaceError(
                f"The {stage!r} artefact at {path} is incomplete (no {DONE_FILE}): an earlier run was "
                f"interrupted. {fix} (ensure() replaces the incomplete copy.)"
            )
        return path

    def settings(self, stage: str) -> dict:
        """The preset values `stage` is built from: its own fields and those of every stage it depends on."""
        prefixes, todo = [], [stage]
        while todo:
            current = todo.pop()
            prefixes += STAGE_SETTINGS[current]
            todo += STAGES[current][0]
        return {k: v for k, v in self.preset.as_dict().items() if k.startswith(tuple(prefixes))}

    def changed_settings(self, stage: str) -> dict:
        """{field: (recorded, now)} for a finished stage built with other preset values; {} if none (or if its
        DONE.json records none: hand-made or from an older kit)."""
        recorded = (self.done_record(stage)[0] or {}).get("settings")
        if recorded is None:
            return {}
        now = self.settings(stage)
        return {k: (recorded.get(k), v) for k, v in now.items() if recorded.get(k) != v}

    def metrics(self, stage: str) -> dict:
        self.require(stage)
        return self.done_record(stage)[0]

    def check_home(self) -> None:
        """WorkspaceError (one line naming the path) if nothing can be built here: see `home_problem`."""
        problem = home_problem(self.home)
        if problem:
            raise WorkspaceError(problem[0].upper() + problem[1:])

    @contextmanager
    def writing(self, stage: str):
        """Yield a temporary directory; on success, mark it finished and move it into place atomically."""
        self.check_home()
        target = self.path(stage)
        self.root.mkdir(parents=True, exist_ok=True)
        if self.preset.overrides() and not (self.root / "preset.json").exists():     # what `lab+3f2a9c` stands for
            (self.root / "preset.json").write_text(json.dumps(
                {"preset": self.preset.name, "overrides": self.preset.overrides()}, indent=2) + "\n")
        tmp = self.root / f".{stage}.tmp-{os.getpid()}-{time.time_ns()}"
        tmp.mkdir()
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if not (tmp / DONE_FILE).is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            raise WorkspaceError(f"Building {stage!r} wrote no {DONE_FILE}; the stage builder is broken.")
        old = None
        if target.exists():
            old = self.root / f".{stage}.old-{os.getpid()}-{time.time_ns()}"
            target.rename(old)
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def build(self, stage: str, **kwargs) -> Path:
        """(Re)build `stage`, first ensuring the stages it depends on. kwargs go to the stage builder
        (for example `callback=` for a live loss curve) and are recorded in DONE.json as its "inputs". Stages
        built from the old version of `stage` are removed afterwards, saying so: they no longer match it, and
        `ensure` will rebuild them when asked. The learner's labels are never removed."""
        _check_stage(stage)
        self.check_home()                                       # an unusable home fails here, before building
        builder = _builder(stage)
        inputs = builder_inputs(builder, kwargs, self.root)     # a misspelt argument fails here, before building
        if os.environ.get(REUSE_VAR) == "1" and self.is_done(stage) and not self.changed_settings(stage):
            return self._reuse(stage, kwargs.get("callback"))
        for dependency in STAGES[stage][0]:
            self.ensure(dependency)
        from .device import seed_everything  # imports torch: only when a stage is built

        started = time.perf_counter()
        with self.writing(stage) as out_dir:
            # Every random generator starts from the workspace's seed, so a stage's artefact depends on the preset,
            # the seed and its inputs only, never on what the process drew before (a notebook kernel's earlier
            # cells, another stage): each new process starts torch's generator from a random seed.
            seed_everything(self.seed)
            curve: list[dict] = []
            if kwargs.get("callback") is not None:               # kept, so that a reused stage can replay it
                kwargs = {**kwargs, "callback": _recording(kwargs["callback"], curve)}
            metrics = builder(self, out_dir, **kwargs)
            if curve:
                (out_dir / CURVE_FILE).write_text(json.dumps(curve) + "\n")
            metrics = {"stage": stage, "preset": self.preset.name, "seed": self.seed,
                       **metrics, "seconds": round(time.perf_counter() - started, 2),
                       "settings": self.settings(stage), "inputs": inputs}
            (out_dir / DONE_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
        self._remove_downstream(stage)
        return self.path(stage)

    def wants(self, stage: str) -> bool:
        """Whether `ensure(stage)` would (re)build `stage`: it is missing, damaged, or was built with other preset
        values. A lab's run made with exactly the stage's settings then records itself as the stage (`record`)."""
        record, _ = self.done_record(stage)
        return record is None or bool(self.changed_settings(stage))

    def record(self, stage: str, write: Callable[[Path], dict], by: str, **kwargs) -> Path:
        """Record, as `stage`, a run a lab has just made with the settings `build(stage, **kwargs)` trains with, so
        that no later lab trains it again (lab 08 ranks lab 05's beta = 0 run, lab 06's DPO and PPO runs, lab 07's
        GRPO runs). `write(out_dir)` saves the run's model there and returns the metrics the stage's builder would
        have returned; DONE.json is the one `build` writes (kwargs recorded as its inputs), plus "recorded_by":
        `by`, the function that made the run. The stages it was trained from must be finished: they were, for
        the run. Stages built from an older `stage` are removed, as after `build`."""
        _check_stage(stage)
        inputs = builder_inputs(_builder(stage), kwargs, self.root)
        for dependency in STAGES[stage][0]:
            self.require(dependency)
        with self.writing(stage) as out_dir:
            metrics = write(out_dir)
            metrics = {"stage": stage, "preset": self.preset.name, "seed": self.seed, **metrics,
                       "settings": self.settings(stage), "inputs": inputs, "recorded_by": by}
            (out_dir / DONE_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
        self._remove_downstream(stage)
        print(f"{stage}: this run is recorded as the workspace's {stage!r} stage ({by}), so no later lab trains it "
              f"again.", flush=True)
        return self.path(stage)

    def _reuse(self, stage: str, callback: Callable | None) -> Path:
        """`build` under $RLHF_KIT_REUSE_BUILT=1: the stage as it is, its recorded curve replayed into `callback`."""
        curve_file = self.path(stage) / CURVE_FILE
        if callback is not None and curve_file.exists():
            for point in json.loads(curve_file.read_text()):
                step = point.pop("step")
                callback(step, **point)
        print(f"{stage}: reusing the stage already built in {self.path(stage)} (${REUSE_VAR}=1, set by the test "
              f"suite's labs/ pass), not training it again.", flush=True)
        return self.path(stage)

    def ensure(self, stage: str) -> Path:
        """The finished directory of `stage`, building it (and anything it needs) if missing, incomplete, or built
        with other preset values (the preset was changed since: say so, then rebuild). A stage rebuilt that way,
        or after an earlier stage's rebuild removed it, is trained on the learner's label files it was built with
        (`extra_stores`), if they still exist."""
        record, problem = self.done_record(stage)
        if record is not None:
            changed = self.changed_settings(stage)
            if not changed:
                return self.path(stage)
            print(f"Rebuilding {stage!r}: it was built with other {self.preset.name!r} settings ("
                  + ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items()) + ").", flush=True)
            recorded = record.get("inputs") or {}
        else:
            if problem:
                print(f"{self.path(stage) / DONE_FILE} {problem}: the {stage!r} stage will be rebuilt.", flush=True)
            recorded = self.stale().get(stage, {}).get("inputs") or {}
        stores = [self.root / p for p in recorded.get("extra_stores") or []]
        kept = [p for p in stores if p.is_file()]
        if stores:
            gone = [_relative(p, self.root) for p in stores if not p.is_file()]
            print(f"Rebuilding {stage!r} with the label files it was built with before: "
                  + (", ".join(_relative(p, self.root) for p in kept) or "none") + "."
                  + (f" Gone, so left out: {', '.join(gone)}." if gone else ""), flush=True)
        return self.build(stage, extra_stores=kept) if kept else self.build(stage)

    def stale(self) -> dict:
        """{stage: {"built_from_old": stage, "inputs": ...}} for each stage a rebuild removed and nothing rebuilt."""
        path = self.root / STALE_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def _remove_downstream(self, stage: str) -> None:
        """Remove the stages built from the old `stage`, remember what they were built with, and say so."""
        stale, removed = self.stale(), []
        stale.pop(stage, None)
        for later in downstream(stage):
            record, _ = self.done_record(later)
            if record is not None:
                inputs = record.get("inputs") or {}
                stale[later] = {"built_from_old": stage, "inputs": inputs}
                removed.append(later)
            shutil.rmtree(self.path(later), ignore_errors=True)
        path = self.root / STALE_FILE
        if stale:
            tmp = path.with_name(f".{STALE_FILE}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps(stale, indent=2) + "\n")
            tmp.replace(path)
        elif path.exists():
            path.unlink()
        if removed:
            print(self._stale_message(stage, removed, stale), flush=True)

    def _stale_message(self, stage: str, removed: list[str], stale: dict) -> str:
        """Which stages went stale and what rebuilds them, e.g. "'sft', 'preferences' and 'reward' were built from
        the old 'base' and were removed; labs 01, 02 and 03 (or `ensure('reward')`) rebuild them. ..." """
        labs = sorted({LABS[s] for s in removed if s in LABS})
        how = [("lab " if len(labs) == 1 else "labs ") + _and(labs)] if labs else []
        how += [f"`rlhf-kit {COMMANDS[s]}`" for s in removed if s not in LABS]
        last = [s for s in removed if not set(downstream(s)) & set(removed)]
        message = (f"{_and([repr(s) for s in removed])} {'was' if len(removed) == 1 else 'were'} built from the old "
                   f"{stage!r} and {'was' if len(removed) == 1 else 'were'} removed; {_and(how)} (or "
                   f"{_and([f'`ensure({s!r})`' for s in last])}) rebuild {'it' if len(removed) == 1 else 'them'}.")
        for later in removed:
            stores = stale[later]["inputs"].get("extra_stores") or []
            if stores:
                message += f" `ensure({later!r})` trains {later!r} on the same label files again: {', '.join(stores)}."
        kept = [f"{name}/" for name in LABEL_DIRS if (self.root / name).is_dir()]
        if kept:
            message += f" Your labels in {_and(kept)} are kept."
        return message


def _recording(callback: Callable, curve: list[dict]) -> Callable:
    """`callback`, keeping each call's step and numeric values in `curve` as it passes them on."""
    def record(step, **values):
        curve.append({"step": step, **{name: float(value) for name, value in values.items()
                                        if isinstance(value, numbers.Real) and not isinstance(value, bool)}})
        return callback(step, **values)
    return record


def builder_inputs(builder: Callable, kwargs: dict, root: Path) -> dict:
    """The arguments a stage builder runs with, its defaults included, as DONE.json records them: a function as
    `module.qualname`, `extra_stores` as resolved file paths (relative to the workspace `root` when inside it, so
    two workspaces of the same course record the same inputs), a dataclass field by field, other values as they
    are (their repr if JSON cannot hold them). `callback` only draws, so it is not an input."""
    signature = inspect.signature(builder)
    bound = signature.bind(None, None, **kwargs)       # the builder's (ws, out_dir, ...)
    bound.apply_defaults()
    arguments = {}
    for name, value in list(bound.arguments.items())[2:]:
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(value)
        else:
            arguments[name] = value
    return {name: _describe(name, value, root) for name, value in arguments.items() if name != "callback"}


def _describe(name: str, value, root: Path):
    if name == "extra_stores":
        return [_relative(Path(getattr(store, "path", store)), root) for store in value]
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{value.__module__}.{value.__qualname__}"
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _describe(f.name, getattr(value, f.name), root) for f in fields(value)}
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _relative(path: Path, root: Path) -> str:
    """`path`, resolved, relative to `root` when it lies inside it (labels/you.jsonl), else in full."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def _json_type(value) -> str:
    """How JSON calls the type of a parsed value: "an array", "a string", ..."""
    for kind, name in ((bool, "a boolean"), ((int, float), "a number"), (str, "a string"), (list, "an array"),
                       (dict, "an object")):
        if isinstance(value, kind):
            return name
    return "null"


def _and(items: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def downstream(stage: str) -> list[str]:
    """Every stage built, directly or not, from `stage`."""
    direct = [name for name, (needs, _) in STAGES.items() if stage in needs]
    return direct + [later for name in direct for later in downstream(name)]


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"Unknown stage {stage!r}. Stages are: {', '.join(STAGES)}.")


def ensure(stage: str, preset: str | Preset | None = None, home=None, seed: int | None = None) -> Path:
    """`Workspace(preset, home, seed).ensure(stage)`: build whatever is missing, return the stage directory."""
    return Workspace(preset, home, seed).ensure(stage)
