"""`PreferenceCollector`: label pairs of responses in the notebook, every click saved to disk before it returns.

    collector = PreferenceCollector(store, pairs, annotator="you", simulated=SimulatedAnnotator())
    collector            # shows the widget

Each button calls `store.record(...)` (flushed and fsynced) and only then moves to the next pair, so a kernel that
dies loses nothing that was clicked; a new collector on the same store resumes after the pairs already labelled.

`guard` (optional) is called around every write, `with guard(): store.record(...)`; it raises `WriteRefused` to
refuse it (the classroom's name claim does, once another page took the name over): nothing is written, the page
stops and says why.
"""

from __future__ import annotations

import copy
import html
import math
from contextlib import nullcontext

import ipywidgets as widgets

from ..preferences import CHOICES, INSTRUCTGPT_AGREEMENT, agreement_panel
from ..world import gold_reward

DEFAULT_RUBRIC = (
    "Prefer the response that does what was asked: the requested sentiment, the genre and the subject mentioned, "
    "one finished review of sensible length, no repetition. Tie if they are equally good, skip if you cannot tell."
)
BUTTONS = {"A": "A is better", "B": "B is better", "tie": "Tie", "skip": "Skip"}


class WriteRefused(Exception):
    """Raised by a collector's `guard` to refuse a write; the message says why and what to do."""


class PreferenceCollector:
    """A/B/tie/skip buttons over `pairs` ([{"pair_id", "prompt", "response_a", "response_b"}]), saved to `store`."""

    def __init__(self, store, pairs: list[dict], annotator: str = "", budget: int | None = None,
                 settings: dict | None = None, simulated=None, rubric: str = DEFAULT_RUBRIC, guard=None):
        self.store, self.pairs, self.simulated = store, pairs, simulated
        self.guard = guard or nullcontext
        self.stopped = ""                  # why this page no longer writes (a guard refused), once it does not
        # The panel draws from its own copy, restarted at every refresh: its numbers stay put from click to click
        # and it leaves the autopilot's draws alone.
        self._panel_simulated = copy.deepcopy(simulated)
        self.budget = len(pairs) if budget is None else budget
        self.settings = settings or {}
        self.log: list[dict] = []          # this session's decisions still in effect, in order
        self.current: dict | None = None

        self.name = widgets.Text(value=annotator, description="Your name")
        self.name.observe(lambda change: self._refresh(), names="value")
        self.prompt = widgets.HTML()
        self.responses = [widgets.HTML(layout=widgets.Layout(width="48%", border="1px solid #ccc", padding="6px"))
                          for _ in range(2)]
        self.buttons = {key: widgets.Button(description=text) for key, text in BUTTONS.items()}
        self.buttons["undo"] = widgets.Button(description="Undo last")
        for key, button in self.buttons.items():
            button.add_class(f"rk-choice-{key}" if key != "undo" else "rk-undo")
            button.on_click(lambda _, key=key: self.undo() if key == "undo" else self.choose(key))
        self.progress = widgets.IntProgress(min=0, max=max(1, self.budget))
        self.progress_label = widgets.Label()
        self.autopilot_count = widgets.BoundedIntText(value=10, min=1, max=10_000, description="Autopilot N")
        self.autopilot_button = widgets.Button(description="Autopilot", disabled=simulated is None)
        self.autopilot_button.on_click(lambda _: self.autopilot(self.autopilot_count.value))
        self.status = widgets.HTML()
        self.panel = widgets.HTML()
        self.widget = widgets.VBox([
            widgets.HTML(f"<i>{html.escape(rubric)}</i>"), self.name, self.prompt,
            widgets.HBox(self.responses, layout=widgets.Layout(justify_content="space-between")),
            widgets.HBox([self.buttons[k] for k in ("A", "B", "tie", "skip", "undo")]),
            widgets.HBox([self.progress, self.progress_label]),
            widgets.HBox([self.autopilot_count, self.autopilot_button]), self.status, self.panel,
        ])
        # CSS classes for tests that click the widget in a browser
        for w, css in ((self.widget, "rk-collector"), (self.name, "rk-annotator"), (self.prompt, "rk-prompt"),
                       (self.responses[0], "rk-response-a"), (self.responses[1], "rk-response-b"),
                       (self.progress_label, "rk-progress"), (self.autopilot_button, "rk-autopilot"),
                       (self.status, "rk-status"), (self.panel, "rk-panel")):
            w.add_class(css)
        self._refresh()

    @property
    def annotator(self) -> str:
        return self.name.value.strip()

    def _todo(self, decisions: list[dict], first_id: str | None = None) -> list[dict]:
        """The pairs this annotator has no decision on in `decisions` (the store's), `first_id` first."""
        done = {d["pair_id"] for d in decisions if d["annotator"] == self.annotator}
        todo = [p for p in self.pairs if p["pair_id"] not in done]
        return sorted(todo, key=lambda p: p["pair_id"] != first_id)      # an undone pair comes back first

    def _refresh(self, first_id: str | None = None) -> None:
        """Show the next unlabelled pair (or `first_id`), the progress and the agreement panel."""
        decisions = self.store.load() if self.annotator else []
        todo = self._todo(decisions, first_id)
        labelled = len(self.pairs) - len(todo)
        finished = labelled >= self.budget or not todo
        self.current = None if finished or not self.annotator or self.stopped else todo[0]
        for key in BUTTONS:
            self.buttons[key].disabled = self.current is None
        self.buttons["undo"].disabled = bool(self.stopped)
        self.autopilot_button.disabled = bool(self.stopped) or self.simulated is None
        self.progress.value = min(labelled, self.progress.max)
        self.progress_label.value = f"{labelled} / {self.budget} labelled"
        if self.stopped:
            self.status.value = f"<span style='color:#b00'>{html.escape(self.stopped, quote=False)}</span>"
        elif not self.annotator:
            self.status.value = "Type your name to start: your labels are saved under it."
        elif finished:
            self.status.value = f"<b>Done: {labelled} labelled.</b> Saved in {html.escape(str(self.store.path))}."
        else:
            self.status.value = ""
        pair = self.current
        self.prompt.value = f"<pre>{html.escape(pair['prompt'])}</pre>" if pair else ""
        for box, key, label in zip(self.responses, ("response_a", "response_b"), ("A", "B")):
            box.value = f"<b>{label}</b><br>{html.escape(pair[key])}" if pair else ""
        self.panel.value = self._panel_html(decisions)

    def _panel_html(self, decisions: list[dict]) -> str:
        """This annotator's counts and, with a simulated annotator, the agreement of their own A/B choices."""
        mine = [d for d in decisions if d["annotator"] == self.annotator]
        if not mine:
            return ""
        by_hand = [d for d in mine if not d.get("settings", {}).get("autopilot")]
        counts = ", ".join(f"{sum(d['choice'] == c for d in by_hand)} {c}" for c in CHOICES)
        lines = [f"Your labels: {counts}" + (f" (and {len(mine) - len(by_hand)} by the autopilot)"
                                             if len(mine) > len(by_hand) else "") + "."]
        if self.simulated is not None:
            stats = agreement_panel(by_hand, self.annotator, copy.deepcopy(self._panel_simulated), gold_reward)
            if stats["n"]:
                lines.append(f"On your {stats['n']} A/B choices you agree with the simulated annotator on "
                             f"{_share(stats['agree_simulated'], stats['n'])}, about "
                             f"{stats['agree_simulated_expected']:.0%} expected from its noise, and with the gold "
                             f"ordering on {_share(stats['agree_gold'], stats['n_gold'])}.")
        lines.append(f"For reference, InstructGPT's labellers agreed with each other (not with a truth, which "
                     f"nobody had) about {INSTRUCTGPT_AGREEMENT:.0%} of the time.")
        return "<br>".join(lines)

    def choose(self, choice: str, autopilot: bool = False, refresh: bool = True) -> dict | None:
        """Record `choice` for the pair on screen (durably), then move on. Returns the stored decision."""
        if self.current is None:
            if not self.stopped:
                self.status.value = "Type your name to start." if not self.annotator else "Nothing left to label."
            return None
        pair = self.current
        decision = self._guarded(lambda: self.store.record(
            pair["pair_id"], pair["prompt"], pair["response_a"], pair["response_b"], choice,
            annotator=self.annotator, settings={**self.settings, **({"autopilot": True} if autopilot else {})}))
        if decision is None:                  # refused: nothing was written
            return None
        self.log.append(decision)
        if refresh:
            self._refresh()
        return decision

    def undo(self) -> dict | None:
        """Take back this annotator's last decision (an appended undo event) and show that pair again."""
        if not self.annotator:
            return None
        undone = self._guarded(lambda: self.store.undo(self.annotator))
        if undone is not None:
            for i in range(len(self.log) - 1, -1, -1):
                if self.log[i]["pair_id"] == undone["pair_id"]:
                    del self.log[i]
                    break
        self._refresh(first_id=undone["pair_id"] if undone else None)
        return undone

    def autopilot(self, n: int) -> int:
        """Let the simulated annotator label the next `n` pairs; returns how many it labelled."""
        if self.simulated is None:
            raise ValueError("No simulated annotator: pass simulated=SimulatedAnnotator() to use the autopilot.")
        if self.current is None:
            return 0
        todo = self._todo(self.store.load(), first_id=self.current["pair_id"])
        budget_left = self.budget - (len(self.pairs) - len(todo))
        batch = todo[: max(0, min(n, budget_left))]
        labelled = 0
        for pair in batch:                     # one store read for the whole run, one refresh at the end
            self.current = pair
            if self.choose(self.simulated.prefer(pair["prompt"], pair["response_a"], pair["response_b"]),
                           autopilot=True, refresh=False) is None:
                break                          # refused by the guard: the page has stopped
            labelled += 1
        self._refresh()
        return labelled

    def _guarded(self, write):
        """`write()` inside the guard; None if the guard refused it, and the page stops, saying why."""
        if self.stopped:
            return None
        try:
            with self.guard():
                return write()
        except WriteRefused as refused:
            self.stopped = str(refused)
            self._refresh()
            return None

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def _share(rate: float, n: int) -> str:
    """"7 of 10 (70%)"; "0 pairs" when there is nothing to compare."""
    return "0 pairs" if not n or math.isnan(rate) else f"{round(rate * n)} of {n} ({rate:.0%})"
