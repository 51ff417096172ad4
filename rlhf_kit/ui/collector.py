"""`PreferenceCollector`: label pairs of responses in the notebook, every click saved to disk before it returns.

    collector = PreferenceCollector(store, pairs, annotator="you", simulated=SimulatedAnnotator())
    collector            # shows the widget

Each button calls `store.record(...)` (flushed and fsynced) and only then moves to the next pair, so a kernel that
dies loses nothing that was clicked; a new collector on the same store resumes after the pairs already labelled.
"""

from __future__ import annotations

import html

import ipywidgets as widgets

from ..preferences import agreement_panel
from ..world import gold_reward

DEFAULT_RUBRIC = (
    "Prefer the response that does what was asked: the requested sentiment, the genre and the subject mentioned, "
    "one finished review of sensible length, no repetition. Tie if they are equally good, skip if you cannot tell."
)
BUTTONS = {"A": "A is better", "B": "B is better", "tie": "Tie", "skip": "Skip"}


class PreferenceCollector:
    """A/B/tie/skip buttons over `pairs` ([{"pair_id", "prompt", "response_a", "response_b"}]), saved to `store`."""

    def __init__(self, store, pairs: list[dict], annotator: str = "", budget: int | None = None,
                 settings: dict | None = None, simulated=None, rubric: str = DEFAULT_RUBRIC):
        self.store, self.pairs, self.simulated = store, pairs, simulated
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
        self._refresh()

    @property
    def annotator(self) -> str:
        return self.name.value.strip()

    def _todo(self, first_id: str | None = None) -> list[dict]:
        """The pairs this annotator has not labelled yet (read from the store), `first_id` first."""
        done = self.store.done_pair_ids(self.annotator) if self.annotator else set()
        todo = [p for p in self.pairs if p["pair_id"] not in done]
        return sorted(todo, key=lambda p: p["pair_id"] != first_id)      # an undone pair comes back first

    def _refresh(self, first_id: str | None = None) -> None:
        """Show the next unlabelled pair (or `first_id`), the progress and the agreement panel."""
        todo = self._todo(first_id)
        labelled = len(self.pairs) - len(todo)
        finished = labelled >= self.budget or not todo
        self.current = None if finished or not self.annotator else todo[0]
        for key in BUTTONS:
            self.buttons[key].disabled = self.current is None
        self.progress.value = min(labelled, self.progress.max)
        self.progress_label.value = f"{labelled} / {self.budget} labelled"
        if not self.annotator:
            self.status.value = "Type your name to start: your labels are saved under it."
        elif finished:
            self.status.value = f"<b>Done: {labelled} labelled.</b> Saved in {html.escape(str(self.store.path))}."
        else:
            self.status.value = ""
        pair = self.current
        self.prompt.value = f"<pre>{html.escape(pair['prompt'])}</pre>" if pair else ""
        for box, key, label in zip(self.responses, ("response_a", "response_b"), ("A", "B")):
            box.value = f"<b>{label}</b><br>{html.escape(pair[key])}" if pair else ""
        self._show_agreement()

    def _show_agreement(self) -> None:
        if self.simulated is None or not self.annotator:
            return
        mine = [d for d in self.store.load() if not d.get("settings", {}).get("autopilot")]
        stats = agreement_panel(mine, self.annotator, self.simulated, gold_reward)
        if not stats["n"]:
            self.panel.value = ""
            return
        self.panel.value = (
            f"On your {stats['n']} A/B choices you agree with the simulated annotator "
            f"{stats['agree_simulated']:.0%} of the time (expected {stats['agree_simulated_expected']:.0%}) and "
            f"with the gold ordering {stats['agree_gold']:.0%} ({stats['n_gold']} pairs). "
            f"InstructGPT's labellers agreed with each other about {stats['instructgpt_reference']:.0%}.")

    def choose(self, choice: str, autopilot: bool = False, refresh: bool = True) -> dict | None:
        """Record `choice` for the pair on screen (durably), then move on. Returns the stored decision."""
        if self.current is None:
            self.status.value = "Type your name to start." if not self.annotator else "Nothing left to label."
            return None
        pair = self.current
        decision = self.store.record(pair["pair_id"], pair["prompt"], pair["response_a"], pair["response_b"],
                                     choice, annotator=self.annotator,
                                     settings={**self.settings, **({"autopilot": True} if autopilot else {})})
        self.log.append(decision)
        if refresh:
            self._refresh()
        return decision

    def undo(self) -> dict | None:
        """Take back this annotator's last decision (an appended undo event) and show that pair again."""
        if not self.annotator:
            return None
        undone = self.store.undo(self.annotator)
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
        todo = self._todo(first_id=self.current["pair_id"])
        budget_left = self.budget - (len(self.pairs) - len(todo))
        batch = todo[: max(0, min(n, budget_left))]
        for pair in batch:                     # one store read for the whole run, one refresh at the end
            self.current = pair
            self.choose(self.simulated.prefer(pair["prompt"], pair["response_a"], pair["response_b"]),
                        autopilot=True, refresh=False)
        self._refresh()
        return len(batch)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
