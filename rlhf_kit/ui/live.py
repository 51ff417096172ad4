"""`LiveCurve`: a training curve that redraws in place in the notebook, instead of a wall of printed numbers.

    curve = LiveCurve(metrics=("loss", ("reward", "kl")), title="PPO")
    for step in range(n_steps):
        ...
        curve(step, loss=loss, reward=reward, kl=kl)   # or curve.update(...)
    curve.close()                                      # final redraw with every point

The figure is drawn off-screen with matplotlib's Agg canvas (no pyplot, so the backend in use does not
matter and no duplicate static figure appears) and shown as a PNG in one display area that each redraw
replaces. Outside an IPython kernel nothing is drawn: the curve only records `history`.
"""

from __future__ import annotations

import io
import math
import time

from IPython import get_ipython
from IPython.display import display as ipython_display
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def display(obj):
    """Show `obj` in a new display area and return its handle (with `.update(obj)`).

    Returns None outside an IPython session, where IPython's own display would print the object's repr.
    """
    if get_ipython() is None:
        return None
    return ipython_display(obj, display_id=True)


class LiveCurve:
    """A grid of line plots, one per metric (or per group of metrics), redrawn in place as values arrive.

    metrics: names to plot; an entry that is a tuple of names puts those metrics on one shared subplot.
    every_seconds: redraw at most this often (the first update always draws; close() always redraws).
    ncols: subplots per row (default: all in one row, at most three).
    Values passed to `update` under names not in `metrics` are recorded in `history` but not plotted.
    """

    def __init__(self, metrics=("loss",), title="", xlabel="step", every_seconds=0.5, ncols=None):
        self.panels = [(m,) if isinstance(m, str) else tuple(m) for m in metrics]
        self.title = title
        self.xlabel = xlabel
        self.every_seconds = every_seconds
        self.ncols = ncols or min(len(self.panels), 3)
        self.history: dict[str, list[tuple]] = {name: [] for panel in self.panels for name in panel}
        self._figure = None
        self._lines = {}
        self._handle = None
        self._live = True           # False once display() has said there is nowhere to draw
        self._last_draw = None      # time.monotonic() of the last redraw

    def update(self, step, **values):
        """Record `values` (numbers or 0-d tensors) at `step`, and redraw if `every_seconds` have passed."""
        for name, value in values.items():
            self.history.setdefault(name, []).append((step, float(value)))
        if self._last_draw is None or time.monotonic() - self._last_draw >= self.every_seconds:
            self._draw()

    __call__ = update

    def close(self):
        """Redraw once more so the plot shows every recorded point."""
        self._draw()

    def _build_figure(self):
        """Create the Agg figure with one subplot per panel and an empty line per metric.

        Margins are fixed (in inches) rather than computed by a layout engine, which would double the
        cost of every redraw.
        """
        nrows = math.ceil(len(self.panels) / self.ncols)
        width, height = 4 * self.ncols, 3 * nrows
        self._figure = Figure(figsize=(width, height))
        FigureCanvasAgg(self._figure)
        top_inches = 0.5
        if self.title:
            self._figure.suptitle(self.title)
            top_inches += 0.3
        self._figure.subplots_adjust(left=0.75 / width, right=1 - 0.25 / width, bottom=0.55 / height,
                                     top=1 - top_inches / height, wspace=0.35, hspace=0.6)
        for i, panel in enumerate(self.panels):
            ax = self._figure.add_subplot(nrows, self.ncols, i + 1)
            ax.set_title(" / ".join(panel))
            ax.set_xlabel(self.xlabel)
            ax.grid(alpha=0.3)
            for name in panel:
                (self._lines[name],) = ax.plot([], [], label=name)
            if len(panel) > 1:
                ax.legend(loc="best")

    def _repr_png_(self) -> bytes:
        """The figure with the current history, as PNG bytes (what IPython shows for this object)."""
        if self._figure is None:
            self._build_figure()
        for name, line in self._lines.items():
            points = self.history[name]
            line.set_data([s for s, _ in points], [v for _, v in points])
            line.axes.relim()
            line.axes.autoscale_view()
        buffer = io.BytesIO()
        self._figure.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()

    def _draw(self):
        """Show the plot in a new display area on the first call, then replace it in place.

        The PNG is rendered by IPython when it displays this object, so nothing is drawn where there is
        no IPython to display it.
        """
        self._last_draw = time.monotonic()
        if not self._live:
            return
        if self._handle is None:
            self._handle = display(self)
            self._live = self._handle is not None
        else:
            self._handle.update(self)
