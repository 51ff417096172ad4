"""`Playground`: the PPO playground of lab 04. Move the sliders, press Run, watch reward, KL and samples change.

    pg = Playground(ws)          # ws: a Workspace with its `sft` and `reward` stages
    pg                           # shows the widget: sliders, Run / Stop, dashboard, samples, token colouring
    pg.run_sync(beta=0.0)        # the same run from code (nbval, tests), blocking; returns the Run
    pg.token_view(what="kl")     # one response of the last batch, each token coloured by its KL

Every run builds a fresh `PPOTrainer` from the SFT policy with the same seed, so runs differ only by their
settings; each finished or stopped run is kept and drawn on the same six panels as the earlier ones.

Run trains in a background thread; Stop sets a `threading.Event` that is checked between steps, so a step is
never cut halfway. A thread keeps the kernel free while a step computes (torch releases the GIL), so the Stop
click is handled at once, other cells still run, and it relies on nothing but ipywidgets' trait updates, which
may come from any thread. Running the steps in the kernel's own event loop instead would hold the kernel for a
whole step at a time and depend on ipykernel's event-loop internals, which changed between ipykernel 6 and 7.
The widget shows the dashboard as PNG bytes in an `ipywidgets.Image`, not through an `Output` widget, whose
capture does not work from a thread. `run(blocking=True)` runs the very same loop in the calling thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import io
import textwrap
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import ipywidgets as widgets
import matplotlib
from IPython.display import HTML
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm, to_hex
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..ppo import PPOConfig, PPODiverged, PPOLosses, PPOTrainer
from .tables import _instruction, _table

BETAS = (0.0, 0.001, 0.003, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)   # exact 0, then about log-spaced
LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3)
SLIDER_FIELDS = ("beta", "clip_eps", "lr", "steps", "adaptive_kl", "kl_target")
PANELS = (("proxy", "proxy reward (RM score)"), ("gold", "gold reward"),
          ("kl", "KL to reference (nats): k1 solid, k3 dashed"),
          ("clip_fraction", "clip fraction"), ("entropy", "entropy (nats / token)"),
          ("response_length", "response length (tokens)"))
# what -> (last_batch key, colour map, unit, what a negative value means, what a positive value means)
TOKEN_VIEWS = {
    "kl": ("kl", "RdBu_r", "nats", "less likely than under the reference",
           "more likely than under the reference"),
    "advantage": ("advantages", "PiYG", "whitened", "worse than the value model expected: made less likely",
                  "better than the value model expected: made more likely"),
}


def _num(x: float) -> str:
    """0.05 -> '0.05', 0.0003 -> '3e-4': short labels for settings."""
    if x == 0 or 1e-3 <= abs(x) < 1e4:
        return f"{x:g}"
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


@dataclass
class Run:
    """One playground run: its settings, its PPOConfig and the stats of every step it ran."""
    number: int
    settings: dict                       # the slider values, and any other PPOConfig field that was overridden
    config: PPOConfig
    history: list[dict] = field(default_factory=list)     # `PPOTrainer.step()` stats, one per step
    status: str = "running"              # running, finished, stopped, diverged or failed
    message: str = ""                    # why it diverged or failed
    pressed_at: float = field(default_factory=time.perf_counter)   # when Run was pressed (the run was made)
    first_curve_seconds: float | None = None   # from pressing Run to the dashboard drawn with its first step

    @property
    def label(self) -> str:
        """'#2 beta=0.05 eps=0.2 lr=3e-4', plus adaptive KL and any other override."""
        s = self.settings
        parts = [f"#{self.number}", f"beta={_num(s['beta'])}", f"eps={_num(s['clip_eps'])}", f"lr={_num(s['lr'])}"]
        if s["adaptive_kl"]:
            parts.append(f"adaptive KL target={_num(s['kl_target'])}")
        parts += [f"{k}={v}" for k, v in s.items() if k not in SLIDER_FIELDS]
        return " ".join(parts)


def _runs_legend(figure: Figure, ax, width: float, height: float, top: float) -> None:
    """One legend entry per run (the labels of `ax`'s lines, wrapped), in the right-hand margin of a dashboard
    `width` x `height` inches, `top` inches below its top edge."""
    handles, labels = ax.get_legend_handles_labels()
    figure.legend(handles, [textwrap.fill(label, 34, subsequent_indent="   ") for label in labels], loc="upper left",
                  bbox_to_anchor=(1 - 2.75 / width, 1 - top / height), fontsize=8, frameon=False)


def _stops(grid: tuple, value: float) -> list[tuple[str, float]]:
    """SelectionSlider options: the grid plus `value` (the base config's), labelled shortly."""
    return [(_num(v), v) for v in sorted({*grid, value})]


class _PlaygroundBase:
    """What the PPO and DPO playgrounds share: the kept runs, Run / Stop with a background thread, the status line,
    and the dashboard shown as PNG bytes. A subclass sets `config_class`, `slider_fields` (each the name of a config
    field and of the widget attribute holding its value) and `run_class`; in `__init__` calls `_start_runs`, builds
    a widget per slider field, calls `_build_controls` and builds `widget`; and defines `_train(run, reraise)`, its
    training loop, and `dashboard_figure()`."""

    config_class: type = PPOConfig
    slider_fields: tuple[str, ...] = SLIDER_FIELDS
    run_class: type = Run

    def _start_runs(self, ws, base_config) -> None:
        """The state every playground starts with (call before building the widgets)."""
        self.ws = ws
        self.base_config = base_config
        self.runs: list[Run] = []          # kept runs, oldest first (the running one included)
        self.trainer = None                # the latest run's trainer (its policy, evaluate(), ...)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._busy = False
        self._numbers = 0                  # runs started, for their labels

    def _build_controls(self) -> None:
        """The Run, Stop, Clear runs and Reset sliders buttons, the progress bar, the status line, the dashboard."""
        self.run_button = widgets.Button(description="Run", button_style="success", icon="play")
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.clear_button = widgets.Button(description="Clear runs")
        self.reset_button = widgets.Button(description="Reset sliders", tooltip="back to the preset's settings")
        self.run_button.on_click(lambda _: self.run())
        self.reset_button.on_click(lambda _: self.reset_sliders())
        self.stop_button.on_click(lambda _: self.stop())
        self.clear_button.on_click(lambda _: self.clear_runs())
        self.progress = widgets.IntProgress(value=0, min=0, max=1)
        self.status = widgets.HTML("Ready: set the sliders and press Run.")
        self.dashboard = widgets.Image(format="png", layout=widgets.Layout(width="100%"))

    # ------------------------------------------------------------------------------------------ settings
    def settings(self) -> dict:
        """The sliders' values: {field: value} for each of `slider_fields`."""
        return {name: getattr(self, name).value for name in self.slider_fields}

    def reset_sliders(self) -> None:
        """Put every slider back to the base config's value (the Reset sliders button); kept runs stay."""
        for name in self.slider_fields:
            getattr(self, name).value = getattr(self.base_config, name)
        self._say("Sliders reset to the preset's settings.")

    def config(self, **overrides):
        """The base config with the sliders' values, then `overrides` (any field of the config) on top.
        Raises ValueError, naming the field, for an unknown field or a bad value."""
        name = self.config_class.__name__
        fields = {f.name for f in dataclasses.fields(self.config_class)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"{name} has no field {', '.join(map(repr, unknown))}; its fields are "
                             f"{', '.join(sorted(fields))}.")
        return dataclasses.replace(self.base_config, **{**self.settings(), **overrides})

    # -------------------------------------------------------------------------------------------- runs
    @property
    def running(self) -> bool:
        return self._busy

    def run(self, blocking: bool = False, **overrides):
        """Start a run with the sliders' values and `overrides` (this run only, e.g. beta=0.0, seed=1): a fresh
        trainer from the SFT policy, trained step by step, the dashboard redrawn after each step.

        blocking=False (the Run button) trains in a background thread and returns at once; Stop ends it
        between two steps. blocking=True trains in the calling thread and returns when the run is over.
        Returns the Run, or None when nothing started (a bad setting, or a run already going): the status line
        says why. In a blocking run an unexpected error is raised after it is shown; a diverged run is kept.
        """
        if self._busy:
            self._say("A run is already going: press Stop, or wait for it to finish.", error=True)
            return None
        try:
            config = self.config(**overrides)
        except ValueError as error:
            self._say(f"Bad setting: {error}", error=True)
            return None
        settings = {**{name: getattr(config, name) for name in self.slider_fields},
                    **{k: v for k, v in overrides.items() if k not in self.slider_fields}}
        self._numbers += 1
        run = self.run_class(self._numbers, settings, config)
        self._stop.clear()
        self._set_busy(True)
        if blocking:
            self._train(run, reraise=True)
        else:
            self._thread = threading.Thread(target=self._train, args=(run,), name=f"playground-run-{run.number}",
                                            daemon=True)
            self._thread.start()
        return run

    def run_sync(self, **overrides):
        """`run(blocking=True, **overrides)`: for nbval and tests."""
        return self.run(blocking=True, **overrides)

    def stop(self) -> None:
        """Ask the running run to end after its current step (the Stop button)."""
        if self._busy:
            self._stop.set()
            self._say("Stopping after this step...")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a background run to end; True when no run is going any more."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self._busy

    def clear_runs(self) -> None:
        """Forget the kept runs (a run still going stays) and redraw."""
        self.runs = [run for run in self.runs if run.status == "running"]
        self._draw()
        self._say("Runs cleared.")

    # ---------------------------------------------------------------------------------------- display
    @contextlib.contextmanager
    def _run_guard(self, run: Run, reraise: bool, expected: dict | None = None):
        """How every run ends, whatever happens inside the `with`: an expected error (`expected`: exception class ->
        the run's status, default {ValueError: "failed"}) or any other is recorded on the run and shown in the
        status line, the others re-raised when `reraise`; a run that trained no step is not kept; the dashboard is
        redrawn and the buttons freed."""
        expected = expected or {ValueError: "failed"}
        try:
            yield
        except tuple(expected) as error:
            run.status = next(status for kind, status in expected.items() if isinstance(error, kind))
            run.message = str(error)
            self._say(f"Run {html.escape(run.label)} {run.status}: {error}", error=True)
        except BaseException as error:
            run.status, run.message = "failed", f"{type(error).__name__}: {error}"
            self._say(f"Run {html.escape(run.label)} failed: {run.message}", error=True)
            if reraise:
                raise
        finally:
            if not run.history and run in self.runs:
                self.runs.remove(run)                 # nothing trained: not kept
            self._draw()
            self._set_busy(False)

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        self.run_button.disabled, self.stop_button.disabled, self.clear_button.disabled = busy, not busy, busy

    def _say(self, message: str, error: bool = False) -> None:
        """The status line (HTML): errors in red."""
        self.status.value = f"<span style='color:#b00020'>{html.escape(message)}</span>" if error else message

    def _draw(self) -> None:
        """Redraw the dashboard in place (a new PNG in the Image widget)."""
        figure = self.dashboard_figure()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80)
        figure.clear()                                # not registered with pyplot: nothing else holds it
        self.dashboard.value = buffer.getvalue()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


class Playground(_PlaygroundBase):
    """Sliders (beta, clip epsilon, learning rate, steps, adaptive KL), Run / Stop, a six-panel dashboard that
    overlays every kept run, the current samples and their tokens coloured by KL or advantage.

    base_config: the PPOConfig the sliders start from and every other field is taken from (default: the
    workspace preset's). losses: the `PPOLosses` every run trains with (default: the kit's; lab 04 passes the
    learner's own). trainer_factory(ws, config, losses) -> trainer: default `PPOTrainer.from_workspace`.
    """

    def __init__(self, ws, base_config: PPOConfig | None = None, trainer_factory: Callable | None = None,
                 losses: PPOLosses | None = None):
        self._start_runs(ws, base_config or PPOConfig.from_preset(ws.preset, ws.seed))
        self.trainer_factory = trainer_factory or PPOTrainer.from_workspace
        self.losses = losses or PPOLosses()
        base = self.base_config
        self.beta = widgets.SelectionSlider(options=_stops(BETAS, base.beta), value=base.beta,
                                            description="beta (KL)")
        self.clip_eps = widgets.FloatSlider(value=base.clip_eps, min=min(0.05, base.clip_eps),
                                            max=max(0.5, base.clip_eps), step=0.05, description="clip eps")
        self.lr = widgets.SelectionSlider(options=_stops(LEARNING_RATES, base.lr), value=base.lr,
                                          description="learning rate")
        self.steps = widgets.IntSlider(value=base.steps, min=1, max=max(50, 2 * base.steps), description="steps")
        self.adaptive_kl = widgets.Checkbox(value=base.adaptive_kl, description="adaptive KL", indent=False)
        self.kl_target = widgets.BoundedFloatText(value=base.kl_target, min=min(0.1, base.kl_target),
                                                  max=max(100.0, base.kl_target), step=0.5,
                                                  description="KL target", disabled=not base.adaptive_kl)
        self.adaptive_kl.observe(lambda change: setattr(self.kl_target, "disabled", not change["new"]),
                                 names="value")
        self._build_controls()
        self.samples = widgets.HTML()
        self.token_what = widgets.ToggleButtons(options=[("KL", "kl"), ("advantage", "advantage")], value="kl",
                                                description="colour by")
        self.token_row = widgets.BoundedIntText(value=0, min=0, max=0, description="sample #")
        self.tokens = widgets.HTML()
        for control in (self.token_what, self.token_row):
            control.observe(lambda change: self._show_tokens(), names="value")
        self.widget = widgets.VBox([
            widgets.HBox([widgets.VBox([self.beta, self.clip_eps, self.lr]),
                          widgets.VBox([self.steps, self.adaptive_kl, self.kl_target])]),
            widgets.HBox([self.run_button, self.stop_button, self.clear_button, self.reset_button, self.progress]),
            self.status, self.dashboard, self.samples,
            widgets.HBox([self.token_what, self.token_row]), self.tokens,
        ])
        for w, css in ((self.widget, "rk-playground"), (self.status, "rk-status"), (self.run_button, "rk-run"),
                       (self.stop_button, "rk-stop"), (self.dashboard, "rk-dashboard"),
                       *((getattr(self, name), "rk-" + name.replace("_", "-")) for name in SLIDER_FIELDS)):
            w.add_class(css)                          # CSS classes for the browser test (tests/test_browser.py)
        self._draw()

    def _train(self, run: Run, reraise: bool = False) -> None:
        """Build a fresh trainer and train `run.config.steps` steps, or until Stop. The one training loop, used
        by both the background thread and the blocking path. (Not `PPOTrainer.train`: its tqdm bar would be
        displayed from this thread into whichever cell ran last; the widget has its own progress bar.)"""
        steps = run.config.steps
        self.progress.max, self.progress.value = steps, 0
        with self._run_guard(run, reraise, {PPODiverged: "diverged", ValueError: "failed"}):
            code = ", ".join(f"{name}: {who}" for name, who in self.losses.whose().items())
            self._say(f"Run {html.escape(run.label)}: building a fresh trainer from the SFT policy (running "
                      f"{html.escape(code)})...")
            self.trainer = None                       # let the previous run's models go before loading new ones
            self.trainer = self.trainer_factory(self.ws, run.config, losses=self.losses)
            self.runs.append(run)
            started = time.perf_counter()
            while len(run.history) < steps and not self._stop.is_set():
                run.history.append(self.trainer.step())
                self._show_step(run, time.perf_counter() - started)
            run.status = "finished" if len(run.history) == steps else "stopped"
            first = ("" if run.first_curve_seconds is None else
                     f"; first curve {run.first_curve_seconds:.1f} s after Run")
            self._say(f"Run {html.escape(run.label)} {run.status} after {len(run.history)} of {steps} steps "
                      f"({time.perf_counter() - started:.1f} s{first}).")

    # ---------------------------------------------------------------------------------------- display
    def _show_step(self, run: Run, seconds: float) -> None:
        """After each step: status line, progress bar, dashboard, samples table and token view."""
        stats, done = run.history[-1], len(run.history)
        self.progress.value = done
        self._say(f"Run {html.escape(run.label)}: step {done}/{run.config.steps} · {seconds / done:.1f} s/step · "
                  f"proxy {stats['proxy']:+.2f} · gold {stats['gold']:+.2f} · KL {stats['kl']:.2f} nats · "
                  f"beta {stats['beta']:.3g}")
        self._draw()
        if run.first_curve_seconds is None:
            run.first_curve_seconds = time.perf_counter() - run.pressed_at
        self.samples.value = self.sample_table().data
        self.token_row.max = max(0, len(self.trainer.last_batch) - 1)
        self._show_tokens()

    def _show_tokens(self) -> None:
        if self.trainer is not None and self.trainer.last_batch:
            self.tokens.value = self.token_view(self.token_row.value, self.token_what.value).data

    def dashboard_figure(self) -> Figure:
        """Six panels against step (proxy score, gold, KL, clip fraction, entropy, response length), one line
        per kept run, the newest drawn thickest; the KL panel draws each run's batch-mean KL by k1 (solid) and by
        k3 (dashed), with a line at 0. A matplotlib Figure on an Agg canvas, never registered with
        pyplot, so it needs no display and no closing."""
        figure = Figure(figsize=(13, 5))
        FigureCanvasAgg(figure)
        width, height = figure.get_size_inches()
        figure.subplots_adjust(left=0.6 / width, right=1 - 2.9 / width, bottom=0.5 / height, top=1 - 0.35 / height,
                               wspace=0.3, hspace=0.45)
        axes = figure.subplots(2, 3).ravel()
        for ax, (key, title) in zip(axes, PANELS):
            ax.set_title(title, fontsize=9)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            for run in list(self.runs):
                newest = run is self.runs[-1]
                history = list(run.history)
                style = dict(color=f"C{(run.number - 1) % 10}", lw=2 if newest else 1, alpha=1 if newest else 0.55)
                steps = [s["step"] for s in history]
                # the KL panel: each batch's mean KL by k1 (which can dip below 0) and, dashed, by k3 (never below 0)
                ax.plot(steps, [s["kl_k1" if key == "kl" else key] for s in history], marker="o", markersize=2.5,
                        label=run.label + ("" if run.status in ("running", "finished") else f" ({run.status})"),
                        **style)
                if key == "kl":
                    ax.plot(steps, [s["kl_k3"] for s in history], ls="--", **style)
            if key == "kl" and self.runs:
                ax.axhline(0.0, color="black", lw=0.6)
        for ax in axes[3:]:
            ax.set_xlabel("step", fontsize=8)
        if self.runs:
            _runs_legend(figure, axes[0], width, height, top=0.3)
        return figure

    def sample_table(self, n: int = 4) -> HTML:
        """The current batch's first `n` samples: # (the row for token_view) | instruction | response | proxy |
        gold."""
        rows = self.trainer.last_batch[:n] if self.trainer is not None else []
        return _table(["#", "instruction", "response", "proxy", "gold"],
                      [[str(i), html.escape(_instruction(r["prompt"])), html.escape(r["response"]),
                        f"{r['proxy']:+.2f}", f"{r['gold']:+.2f}"] for i, r in enumerate(rows)])

    def token_view(self, row: int | None = None, what: str = "kl") -> HTML:
        """One sampled response of the last batch, each token coloured by its per-token KL (log pi - log pi_ref,
        nats) or its advantage; the value shows on hover. Diverging colours, 0 white, on one scale for the
        whole batch (so rows compare); `row` indexes `trainer.last_batch` (default 0, the table's #)."""
        if what not in TOKEN_VIEWS:
            raise ValueError(f"token_view(what=...) must be one of {', '.join(map(repr, TOKEN_VIEWS))}; got {what!r}.")
        batch = self.trainer.last_batch if self.trainer is not None else []
        if not batch:
            raise ValueError("No batch yet: press Run (or call run_sync()) first.")
        row = 0 if row is None else row
        if not 0 <= row < len(batch):
            raise ValueError(f"row must be between 0 and {len(batch) - 1} (the last batch has {len(batch)} "
                             f"responses); got {row}.")
        key, cmap_name, unit, negative, positive = TOKEN_VIEWS[what]
        cmap = matplotlib.colormaps[cmap_name]
        scale = max((abs(v) for r in batch for v in r[key]), default=0.0) or 1.0
        norm = TwoSlopeNorm(vcenter=0.0, vmin=-scale, vmax=scale)
        spans = []
        for token, value in zip(batch[row]["tokens"], batch[row][key]):
            rgba = cmap(norm(value))
            ink = "#000" if 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] > 0.55 else "#fff"
            spans.append(f"<span class='rk-tok' title='{what} {value:+.4f} {unit}' style='background:{to_hex(rgba)};"
                         f"color:{ink};border-radius:3px;padding:1px 0;"
                         f"box-shadow:inset 0 0 0 1px rgba(0,0,0,0.15)'>{html.escape(token) or '·'}</span>")
        stops = ", ".join(to_hex(cmap(x)) for x in (0.0, 0.25, 0.5, 0.75, 1.0))
        legend = (f"<div style='font-size:smaller;margin-top:6px'><span>{-scale:+.3g}</span> "
                  f"<span style='display:inline-block;width:10em;height:0.8em;vertical-align:middle;"
                  f"background:linear-gradient(to right, {stops})'></span> <span>{scale:+.3g} {unit}</span><br>"
                  f"{html.escape(what)} per token: left, {html.escape(negative)}; right, {html.escape(positive)}. "
                  f"Hover a token for its value.</div>")
        r = batch[row]
        head = (f"<div><b>#{row}</b> {html.escape(_instruction(r['prompt']))} "
                f"<small>(proxy {r['proxy']:+.2f}, gold {r['gold']:+.2f}, {what} sum "
                f"{sum(r[key]):+.3f})</small></div>")
        return HTML(f"{head}<div style='white-space:pre-wrap;font-family:monospace;line-height:1.7'>"
                    f"{''.join(spans)}</div>{legend}")
