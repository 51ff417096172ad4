"""`DPOPlayground`: the DPO playground of lab 06. Move beta, the learning rate, the epochs and the loss, press Run,
watch the log-probabilities, the held-out implicit reward and the samples' gold reward and KL change.

    pg = DPOPlayground(ws)                      # ws: a Workspace with its `sft` and `reward` stages
    pg                                          # the widget: sliders, Run / Stop, four-panel dashboard, samples
    pg.run_sync(beta=0.5, loss="ipo")           # the same run from code (nbval, tests), blocking; returns the run
    pg.checkpoints                              # the last run's evaluations, one dict per evaluation point

Every run builds a fresh `DPOTrainer` from the SFT policy with the same seed, so runs differ only by their
settings; each finished or stopped run is kept and drawn on the same four panels as the earlier ones. Run, Stop,
the background thread and the status line are the PPO playground's (`playground._PlaygroundBase`, whose module
docstring says why a thread); this module adds DPO's settings, its training loop with evaluation points and its
dashboard.

An evaluation point measures the policy two ways: the implicit reward beta log(pi / pi_ref) on the reward model's
held-out pairs (`DPOTrainer.evaluate_pairs`: accuracy, gold accuracy, margin), and fresh samples on the first
`eval_prompts` held-out prompts (`DPOTrainer.evaluate`: proxy and gold reward, KL from the SFT policy). Step 0
(the SFT policy itself) and a run's last step are always evaluation points.
"""

from __future__ import annotations

import html
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import ipywidgets as widgets
from IPython.display import HTML
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .. import losses
from ..configs import DPO_LOSSES, DPOConfig
from ..dpo import DPOTrainer
from ..world import heldout_prompts, load_world
from .playground import Run, _num, _PlaygroundBase, _runs_legend, _stops
from .tables import _instruction, _table

BETAS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)           # about log-spaced; DPOConfig needs beta > 0
LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)
SLIDER_FIELDS = ("beta", "lr", "epochs", "loss")
LOSS_NAMES = {"sigmoid": "DPO", "ipo": "IPO"}
REDRAW_SECONDS = 1.0                    # during a run, the dashboard is redrawn at most this often between evaluations
PANELS = ("training pairs' log-prob change since SFT, log pi - log pi_ref\n(nats): chosen solid, rejected dashed; "
          "both usually fall",
          "loss (training batch)",
          "held-out pairs: accuracy solid, gold accuracy dotted,\nimplicit-reward margin dashed (right axis)",
          "fresh samples on held-out prompts:\ngold solid, proxy dashed, against KL from SFT")


@dataclass
class DPORun(Run):
    """One DPO playground run: its settings, its DPOConfig, the stats of every step it ran (`DPOTrainer.step()`)
    and its evaluations (one dict per evaluation point: see `DPOPlayground.checkpoints`)."""
    evaluations: list[dict] = field(default_factory=list)
    total_steps: int = 0                 # the steps its epochs make (known once its trainer is built)

    @property
    def label(self) -> str:
        """'#2 DPO beta=0.1 lr=1e-4 epochs=2', plus any other override."""
        s = self.settings
        parts = [f"#{self.number}", LOSS_NAMES[s["loss"]], f"beta={_num(s['beta'])}", f"lr={_num(s['lr'])}",
                 f"epochs={s['epochs']}"]
        parts += [f"{k}={v}" for k, v in s.items() if k not in SLIDER_FIELDS]
        return " ".join(parts)


class DPOPlayground(_PlaygroundBase):
    """Sliders (beta, learning rate, epochs), the loss (DPO's sigmoid or IPO), Run / Stop, a four-panel dashboard
    that overlays every kept run, and the samples of the latest evaluation.

    loss_fn: the learner's loss, a callable `(pc, pr, rc, rr, beta) -> (loss, stats)` used when the loss menu says
    DPO ("sigmoid"), or a dict {"sigmoid": fn, "ipo": fn}; a loss not given is the kit's (`losses.dpo_loss`,
    `losses.ipo_loss`). logprobs_fn: the learner's `sequence_logprobs` (default: the kit's).
    eval_every: steps between evaluation points (default: about 4 per run, the last step always one).
    eval_prompts: how many held-out prompts each evaluation samples (the first ones, at seed ws.seed).
    base_config: the DPOConfig the sliders start from and every other field is taken from (default: the workspace
    preset's). extra_stores: the learner's label files, trained on with the `preferences` stage's pairs (as in
    `dpo.workspace_pairs`).
    """

    config_class = DPOConfig
    slider_fields = SLIDER_FIELDS
    run_class = DPORun

    def __init__(self, ws, loss_fn: Callable | dict | None = None, logprobs_fn: Callable | None = None,
                 eval_every: int | None = None, eval_prompts: int = 16, base_config: DPOConfig | None = None,
                 extra_stores=()):
        for name, value in (("eval_every", eval_every), ("eval_prompts", eval_prompts)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"DPOPlayground({name}=...) must be a whole number >= 1; got {value!r}.")
        loss_fns = {"sigmoid": loss_fn} if callable(loss_fn) else dict(loss_fn or {})
        unknown = sorted(set(loss_fns) - set(DPO_LOSSES))
        if unknown:
            raise ValueError(f"DPOPlayground(loss_fn=...) got a loss for {', '.join(map(repr, unknown))}; the losses "
                             f"are {', '.join(map(repr, DPO_LOSSES))}: pass {{'sigmoid': dpo_loss, 'ipo': ipo_loss}}.")
        self._start_runs(ws, base_config or DPOConfig.from_preset(ws.preset, ws.seed))
        self.loss_fns = loss_fns
        self.logprobs_fn = logprobs_fn or losses.sequence_logprobs
        self.extra_stores = list(extra_stores)
        self.eval_every, self.eval_prompts = eval_every, eval_prompts
        self._prompts: list[str] | None = None         # read from the world on the first run
        self._drawn = 0.0                              # time.monotonic() of the last redraw after a step

        base = self.base_config
        self.beta = widgets.SelectionSlider(options=_stops(BETAS, base.beta), value=base.beta,
                                            description="beta")
        self.lr = widgets.SelectionSlider(options=_stops(LEARNING_RATES, base.lr), value=base.lr,
                                          description="learning rate")
        self.epochs = widgets.IntSlider(value=base.epochs, min=1, max=max(8, base.epochs), description="epochs")
        self.loss = widgets.Dropdown(options=[("DPO (sigmoid)", "sigmoid"), ("IPO", "ipo")], value=base.loss,
                                     description="loss")
        self._build_controls()
        self.samples = widgets.HTML()
        self.widget = widgets.VBox([
            widgets.HBox([widgets.VBox([self.beta, self.lr]), widgets.VBox([self.epochs, self.loss])]),
            widgets.HBox([self.run_button, self.stop_button, self.clear_button, self.reset_button, self.progress]),
            self.status, self.dashboard, self.samples,
        ])
        self._draw()

    @property
    def checkpoints(self) -> list[dict]:
        """The last kept run's evaluation points, oldest first ([] before any run), each
        {"step", "epoch", "heldout_accuracy", "heldout_gold_accuracy", "heldout_margin", "heldout_chosen_logps",
        "heldout_rejected_logps" (`DPOTrainer.evaluate_pairs` on the reward model's held-out pairs), "proxy",
        "gold", "format_rate", "kl" (nats per response, from the SFT policy), "response_length", "samples"
        (`DPOTrainer.evaluate` on the first `eval_prompts` held-out prompts, seed ws.seed)}."""
        return self.runs[-1].evaluations if self.runs else []

    # -------------------------------------------------------------------------------------------- runs
    def _train(self, run: DPORun, reraise: bool = False) -> None:
        """Build a fresh trainer, evaluate it at step 0, train all the steps of its epochs or until Stop, evaluating
        every `eval_every` steps and at the last step. The one training loop, used by both the background thread
        and the blocking path (not `DPOTrainer.train`, whose tqdm bar would land in whichever cell ran last)."""
        with self._run_guard(run, reraise):
            self._say(f"Run {html.escape(run.label)}: building a fresh trainer from the SFT policy...")
            self.trainer = None                       # let the previous run's models go before loading new ones
            self.trainer = DPOTrainer.from_workspace(self.ws, run.config, extra_stores=self.extra_stores,
                                                     loss_fn=self.loss_fns.get(run.config.loss),
                                                     logprobs_fn=self.logprobs_fn)
            total = run.total_steps = self.trainer.total_steps
            every = self.eval_every or max(1, math.ceil(total / 4))
            self.progress.max, self.progress.value = total, 0
            self.runs.append(run)
            self._evaluate(run)
            self._draw()                              # the SFT policy's point, before the first step
            started = time.perf_counter()
            while len(run.history) < total and not self._stop.is_set():
                run.history.append(self.trainer.step())
                done = len(run.history)
                evaluated = done % every == 0 or done == total
                if evaluated:
                    self._evaluate(run)
                self._show_step(run, time.perf_counter() - started, redraw=evaluated)
            if run.history and run.evaluations[-1]["step"] != len(run.history):
                self._evaluate(run)                    # a stopped run: measure where it stopped
            run.status = "finished" if len(run.history) == total else "stopped"
            self._say(f"Run {html.escape(run.label)} {run.status} after {len(run.history)} of {total} steps "
                      f"({time.perf_counter() - started:.1f} s). {self._summary(run)}")

    def _evaluate(self, run: DPORun) -> dict:
        """Measure the current trainer's policy, append the result to `run.evaluations` and return it (keys: see
        `checkpoints`)."""
        step = len(run.history)
        code = ", ".join(f"{name}: {who}" for name, who in self.trainer.whose().items())
        self._say(f"Run {html.escape(run.label)}: measuring step {step} on {len(self.trainer.heldout_pairs)} held-out "
                  f"pairs and {len(self.prompts())} held-out prompts (running {html.escape(code)})...")
        pairs = self.trainer.evaluate_pairs(self.trainer.heldout_pairs)
        fresh = self.trainer.evaluate(self.prompts(), seed=self.ws.seed)
        point = {"step": step, "epoch": run.history[-1]["epoch"] if run.history else 0.0,
                 **{f"heldout_{key}": pairs[key] for key in ("accuracy", "gold_accuracy", "margin", "chosen_logps",
                                                             "rejected_logps")},
                 **{key: fresh[key] for key in ("proxy", "gold", "format_rate", "kl", "response_length", "samples")}}
        run.evaluations.append(point)
        self.samples.value = self.sample_table().data
        return point

    def prompts(self) -> list[str]:
        """The held-out prompts every evaluation samples: the world's first `eval_prompts`."""
        if self._prompts is None:
            self._prompts = heldout_prompts(load_world(self.ws.require("world")))[:self.eval_prompts]
        return self._prompts

    # ---------------------------------------------------------------------------------------- display
    @staticmethod
    def _summary(run: DPORun) -> str:
        """'held-out accuracy 0.62 · gold -0.31 · KL 1.2 nats (step 8)': the run's latest evaluation."""
        if not run.evaluations:
            return ""
        e = run.evaluations[-1]
        return (f"Held-out accuracy {e['heldout_accuracy']:.2f} · margin {e['heldout_margin']:+.3f} · gold "
                f"{e['gold']:+.2f} · proxy {e['proxy']:+.2f} · KL {e['kl']:.2f} nats (step {e['step']}).")

    def _show_step(self, run: DPORun, seconds: float, redraw: bool) -> None:
        """After each step: status line, progress bar, and the dashboard when `redraw` (an evaluation point) or
        REDRAW_SECONDS have passed since it was last drawn after a step (a redraw costs about 0.3 s on a CPU: more
        than a small DPO step)."""
        stats, done = run.history[-1], len(run.history)
        self.progress.value = done
        self._say(f"Run {html.escape(run.label)}: step {done}/{run.total_steps} · {seconds / done:.1f} s/step · "
                  f"loss {stats['loss']:.3f} · batch accuracy {stats['accuracy']:.2f} · log-prob chosen "
                  f"{stats['chosen_logps']:.1f}, rejected {stats['rejected_logps']:.1f}. {self._summary(run)}")
        if redraw or time.monotonic() - self._drawn >= REDRAW_SECONDS:
            self._draw()
            self._drawn = time.monotonic()

    def dashboard_figure(self) -> Figure:
        """Four panels, one line per kept run (the newest, the last run, drawn thickest): per step, how far the
        policy's log-probabilities of the batch's chosen and rejected responses have moved from the SFT policy's
        (the step's implicit rewards / beta; the raw log-probabilities, which vary with each batch's response
        lengths, are in the history), with a line at 0; the loss per step; on the held-out pairs at each
        evaluation point, accuracy, gold accuracy and (right axis) the implicit-reward margin; the fresh samples'
        gold and proxy reward against their KL from the SFT policy, one point per evaluation point. A matplotlib
        Figure on an Agg canvas, never registered with pyplot, so it needs no display and no closing; its first
        four axes are the panels (titles `PANELS`), the fifth the margin's right axis."""
        figure = Figure(figsize=(13, 7))
        FigureCanvasAgg(figure)
        width, height = figure.get_size_inches()
        figure.subplots_adjust(left=0.6 / width, right=1 - 2.9 / width, bottom=0.55 / height,
                               top=1 - 0.55 / height, wspace=0.3, hspace=0.55)
        axes = figure.subplots(2, 2).ravel()
        for ax, title, xlabel in zip(axes, PANELS, ("step", "step", "step", "KL from SFT (nats / response)")):
            ax.set_title(title, fontsize=9)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        for ax in axes[:3]:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        margin_ax = axes[2].twinx()
        margin_ax.tick_params(labelsize=7)
        axes[2].set_ylim(-0.05, 1.05)
        for run in list(self.runs):
            newest = run is self.runs[-1]
            history, evaluations = list(run.history), list(run.evaluations)
            style = dict(color=f"C{(run.number - 1) % 10}", lw=2 if newest else 1, alpha=1 if newest else 0.55)
            steps = [s["step"] for s in history]
            label = run.label + ("" if run.status in ("running", "finished") else f" ({run.status})")
            beta = run.config.beta                    # the step's implicit rewards are beta (log pi - log pi_ref)
            axes[0].plot(steps, [s["chosen_reward"] / beta for s in history], label=label, **style)
            axes[0].plot(steps, [s["rejected_reward"] / beta for s in history], ls="--", **style)
            axes[1].plot(steps, [s["loss"] for s in history], **style)
            at = [e["step"] for e in evaluations]
            axes[2].plot(at, [e["heldout_accuracy"] for e in evaluations], marker="o", markersize=3, **style)
            axes[2].plot(at, [e["heldout_gold_accuracy"] for e in evaluations], ls=":", marker="o", markersize=3,
                         **style)
            margin_ax.plot(at, [e["heldout_margin"] for e in evaluations], ls="--", marker="s", markersize=3, **style)
            kls = [e["kl"] for e in evaluations]
            axes[3].plot(kls, [e["gold"] for e in evaluations], marker="o", markersize=3, **style)
            axes[3].plot(kls, [e["proxy"] for e in evaluations], ls="--", marker="o", markersize=3, **style)
        if self.runs:
            axes[0].axhline(0.0, color="black", lw=0.6)
            _runs_legend(figure, axes[0], width, height, top=0.5)
        return figure

    def sample_table(self, n: int = 4) -> HTML:
        """The latest evaluation's first `n` samples (fresh, on held-out prompts): instruction | response | proxy |
        gold, under the run and step they come from."""
        run = next((r for r in reversed(self.runs) if r.evaluations), None)
        if run is None:
            return _table(["instruction", "response", "proxy", "gold"], [])
        point = run.evaluations[-1]
        table = _table(["instruction", "response", "proxy", "gold"],
                       [[html.escape(_instruction(r["prompt"])), html.escape(r["response"]), f"{r['proxy']:+.2f}",
                         f"{r['gold']:+.2f}"] for r in point["samples"][:n]])
        return HTML(f"<div><b>Run {html.escape(run.label)}, step {point['step']}</b></div>{table.data}")
