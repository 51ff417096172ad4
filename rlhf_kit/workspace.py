"""The workspace: one directory holding every stage's artefacts, and `ensure(stage)` to hand them between labs.

Layout: `<home>/<preset>-seed<seed>/<stage>/`, where home is $RLHF_KIT_HOME or, by default, the git-ignored
`workspace/` folder of the repository; a preset with overrides has its own folder, `<preset>+<hash>-seed<seed>`
(see `Preset.key`). A stage directory counts as finished only when it holds `DONE.json` (its metrics). Stages
are built in a temporary sibling directory and renamed into place at the very end, so an interrupted run leaves
no half-written artefact that could be mistaken for a finished one.

    from rlhf_kit.workspace import ensure
    sft_dir = ensure("sft")      # builds world -> base -> sft if any is missing, with progress bars
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path
from typing import Callable

from .presets import Preset, get_preset

ENV_VAR = "RLHF_KIT_HOME"
SEED_VAR = "RLHF_KIT_SEED"
DONE_FILE = "DONE.json"


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


# Each stage: the stages it needs, and the module named after it whose `build(ws, out_dir, **kwargs) -> metrics`
# builds it. Modules are imported lazily so that importing the workspace stays cheap.
STAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "world": ((), "world"),
    "base": (("world",), "pretrain"),
    "sft": (("base",), "sft"),
    "preferences": (("sft",), "collect"),
    "reward": (("preferences",), "reward"),
    "ppo": (("reward",), "ppo"),
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
}

# What a learner runs to (re)build a stage by hand.
COMMANDS = {"world": "pretrain", "base": "pretrain", "sft": "sft", "preferences": "collect --simulated",
            "reward": "reward", "ppo": "ppo"}


def _builder(stage: str) -> Callable:
    return import_module(f"rlhf_kit.{STAGES[stage][1]}").build


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
        return (self.path(stage) / DONE_FILE).is_file()

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
        recorded = json.loads((self.path(stage) / DONE_FILE).read_text()).get("settings")
        if recorded is None:
            return {}
        now = self.settings(stage)
        return {k: (recorded.get(k), v) for k, v in now.items() if recorded.get(k) != v}

    def metrics(self, stage: str) -> dict:
        return json.loads((self.require(stage) / DONE_FILE).read_text())

    @contextmanager
    def writing(self, stage: str):
        """Yield a temporary directory; on success, mark it finished and move it into place atomically."""
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
        (for example `callback=` for a live loss curve). Stages built from the old version of `stage` are
        removed afterwards: they no longer match it, and `ensure` will rebuild them when asked."""
        _check_stage(stage)
        for dependency in STAGES[stage][0]:
            self.ensure(dependency)
        from .device import seed_everything     # imports torch: only when a stage is built

        started = time.perf_counter()
        builder = _builder(stage)
        with self.writing(stage) as out_dir:
            # Every random generator starts from the workspace's seed, so a stage's artefact depends on the preset,
            # the seed and its inputs only, never on what the process drew before (a notebook kernel's earlier
            # cells, another stage): each new process starts torch's generator from a random seed.
            seed_everything(self.seed)
            metrics = builder(self, out_dir, **kwargs)
            metrics = {"stage": stage, "preset": self.preset.name, "seed": self.seed,
                       **metrics, "seconds": round(time.perf_counter() - started, 2),
                       "settings": self.settings(stage)}
            (out_dir / DONE_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
        for later in downstream(stage):
            shutil.rmtree(self.path(later), ignore_errors=True)
        return self.path(stage)

    def ensure(self, stage: str) -> Path:
        """The finished directory of `stage`, building it (and anything it needs) if missing, incomplete, or built
        with other preset values (the preset was changed since: say so, then rebuild)."""
        if self.is_done(stage):
            changed = self.changed_settings(stage)
            if not changed:
                return self.path(stage)
            print(f"Rebuilding {stage!r}: it was built with other {self.preset.name!r} settings ("
                  + ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items()) + ").", flush=True)
        return self.build(stage)


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
