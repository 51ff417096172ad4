"""Static plots for the labs (matplotlib figures, returned so a notebook shows them and a test can inspect them)."""

from __future__ import annotations

import io
import math

import torch
from matplotlib.figure import Figure


class Plot:
    """A matplotlib figure that Jupyter shows as a PNG, whether or not pyplot was ever imported."""

    def __init__(self, figure: Figure):
        self.figure = figure

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()


def margin_histogram(margins: torch.Tensor, title: str = "reward margin on held-out pairs") -> Plot:
    """Histogram of r_chosen - r_rejected: mass right of 0 is pairs the reward model orders like the labels."""
    fig = Figure(figsize=(5, 3))
    ax = fig.subplots()
    ax.hist(margins.tolist(), bins=30, color="#4c72b0")
    ax.axvline(0, color="black", lw=1)
    ax.set(xlabel="r(chosen) - r(rejected)", ylabel="pairs", title=title)
    fig.tight_layout()
    return Plot(fig)


def calibration_plot(bins: list[dict], title: str = "calibration on held-out pairs") -> Plot:
    """Predicted P(A preferred) = sigmoid(r_A - r_B) against how often A was preferred; the diagonal is perfect."""
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfectly calibrated")
    ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], "o-", color="#c44e52",
            label="reward model")
    for b in bins:
        ax.annotate(str(b["n"]), (b["predicted"], b["observed"]), textcoords="offset points", xytext=(4, -10),
                    fontsize=7, color="#555")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted P(A preferred)", ylabel="observed share A preferred",
           title=title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return Plot(fig)


def probe_plot(rows: list[dict], title: str = "reward model vs gold, by kind of response") -> Plot:
    """Mean normalised reward-model score and mean gold reward for each kind of probe response."""
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    proxy = [sum(r["proxy"] for r in rows if r["kind"] == k) / sum(r["kind"] == k for r in rows) for k in kinds]
    gold = [sum(r["gold"] for r in rows if r["kind"] == k) / sum(r["kind"] == k for r in rows) for k in kinds]
    fig = Figure(figsize=(7, 3))
    ax = fig.subplots()
    x = range(len(kinds))
    ax.bar([i - 0.2 for i in x], proxy, width=0.4, label="reward model (normalised)", color="#4c72b0")
    ax.bar([i + 0.2 for i in x], gold, width=0.4, label="gold reward", color="#55a868")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(list(x), kinds, fontsize=8)
    ax.set(title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return Plot(fig)


def overoptimisation_plot(sweep: list[dict], bon: list[dict] | None = None,
                          title: str = "optimising the proxy: reward model vs gold", dpo: list[dict] | None = None,
                          ) -> Plot:
    """Proxy (left) and gold reward (right) against sqrt(KL from the SFT policy), one line per beta of the
    PPO sweep (dots at its checkpoints), best-of-n on the same axes (dashed, labelled by n) and, given `dpo`
    (`dpo.dpo_sweep` rows), one dotted line per DPO beta (triangles at its checkpoints)."""
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    betas = list(dict.fromkeys(row["beta"] for row in sweep))
    for ax, key, name in zip(axes, ("proxy", "gold"), ("proxy: reward-model score (normalised)", "gold reward")):
        for method, rows, style, first in (("PPO", sweep, "o-", 0), ("DPO", dpo or [], "^:", len(betas))):
            for i, beta in enumerate(dict.fromkeys(row["beta"] for row in rows)):
                run = sorted((row for row in rows if row["beta"] == beta), key=lambda row: row["step"])
                ax.plot([math.sqrt(max(row["kl"], 0.0)) for row in run], [row[key] for row in run], style,
                        color=f"C{first + i}", label=f"{method} beta = {beta:g}")
        if bon:
            ax.plot([math.sqrt(row["kl"]) for row in bon], [row[key] for row in bon], "s--", color="black",
                    label="best-of-n")
            for row in bon:
                ax.annotate(f"n={row['n']}", (math.sqrt(row["kl"]), row[key]), textcoords="offset points",
                            xytext=(3, -11), fontsize=7, color="#444")
        ax.set(xlabel="sqrt(KL from SFT)  [sqrt(nats)]", ylabel=name, title=name.split(":")[0])
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return Plot(fig)


def kl_estimators_plot(runs, title: str = "each batch's mean KL to the reference: k1 against k3") -> Plot:
    """Per step, the batch-mean KL per response by the k1 estimator (solid, can dip below 0) and by k3 (dashed,
    never below 0) of each run. `runs`: (label, history) pairs, history being `PPOTrainer.step()` stats with
    `kl_k1` and `kl_k3`. The right panel zooms in on the first steps, where the true KL is small and k1's noise
    can take its batch mean below 0."""
    fig = Figure(figsize=(10, 3.4))
    axes = fig.subplots(1, 2)
    for ax, first in zip(axes, (None, 8)):
        for i, (label, history) in enumerate(runs):
            history = history[:first]
            steps = [s["step"] for s in history]
            ax.plot(steps, [s["kl_k1"] for s in history], "o-", ms=3, color=f"C{i}", label=f"{label}: k1")
            ax.plot(steps, [s["kl_k3"] for s in history], "s--", ms=3, color=f"C{i}", alpha=0.7, label=f"{label}: k3")
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set(xlabel="step", ylabel="nats per response",
               title="all steps" if first is None else f"the first {first} steps")
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return Plot(fig)


def updates_plot(updates: list[dict], title: str = "one GRPO step, update by update") -> Plot:
    """The loss (left) and the policy's gradient norm (right) of each update of one step (`PPOTrainer.updates`
    rows with "update", "loss", "grad_norm" and "epoch"): the loss can sit near 0 while the gradient does not."""
    fig = Figure(figsize=(10, 3.2))
    axes = fig.subplots(1, 2)
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "grad_norm", "gradient norm (before clipping)")):
        for epoch in sorted({row["epoch"] for row in updates}):
            rows = [row for row in updates if row["epoch"] == epoch]
            ax.plot([row["update"] for row in rows], [row[key] for row in rows], "o-", color=f"C{epoch - 1}",
                    label=f"epoch {epoch}")
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set(xlabel="update", ylabel=label)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return Plot(fig)


def methods_plot(rows: list[dict], title: str = "the same samples and steps, three ways to get an advantage") -> Plot:
    """Left: gold reward against KL from the SFT model, one labelled point per row (the SFT row at KL 0). Middle and
    right: seconds per step and peak memory per trained row. Rows: {"name", "gold", "kl"} and, for trained rows,
    "seconds_per_step" and "peak_memory_mib" (None or NaN when not measured)."""
    fig = Figure(figsize=(12, 3.6))
    axes = fig.subplots(1, 3)
    for i, row in enumerate(rows):
        axes[0].plot([row["kl"]], [row["gold"]], "o", ms=8, color=f"C{i}")
        axes[0].annotate(row["name"], (row["kl"], row["gold"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    axes[0].set(xlabel="KL from the SFT model (nats per response)", ylabel="gold reward (held out)")
    trained = [row for row in rows if row.get("seconds_per_step") is not None]
    names = [row["name"] for row in trained]
    for ax, key, label in ((axes[1], "seconds_per_step", "seconds per step"),
                           (axes[2], "peak_memory_mib", "peak memory added (MiB)")):
        values = [row.get(key) if row.get(key) is not None else float("nan") for row in trained]
        ax.bar(range(len(trained)), values, color=[f"C{rows.index(row)}" for row in trained])
        ax.set_xticks(range(len(trained)), names, rotation=20, ha="right", fontsize=8)
        ax.set(ylabel=label)
    fig.suptitle(title)
    fig.tight_layout()
    return Plot(fig)


def leaderboard_plot(board: dict, title: str = "every policy of the course, ranked") -> Plot:
    """Left: each policy's rating (Bradley-Terry on the labeller's verdicts, SFT = 0) with its 95% interval, in order
    of gold reward (best at the top). Right: proxy (reward model) against gold, both relative to SFT; the policies in
    the lower-right quadrant (the proxy says better, gold says worse: reward hacking) in red. `board` is
    `leaderboard.leaderboard`'s result."""
    rows = sorted(board["policies"].items(), key=lambda item: item[1]["gold"])
    ref = board["policies"]["sft"]
    hacked = set(board["proxy_up_gold_down"])
    fig = Figure(figsize=(12, 0.45 * len(rows) + 2.2))
    left, right = fig.subplots(1, 2)
    for y, (name, r) in enumerate(rows):
        low, high = r["rating_ci"]
        color = "C3" if name in hacked else "C0"
        left.errorbar([r["rating"]], [y], xerr=[[r["rating"] - low], [high - r["rating"]]], fmt="o", color=color,
                      capsize=3)
        dx, dy = r["proxy"] - ref["proxy"], r["gold"] - ref["gold"]
        right.plot([dx], [dy], "o", ms=8, color=color)
        right.annotate(name, (dx, dy), textcoords="offset points", xytext=(5, 4), fontsize=8)
    left.set_yticks(range(len(rows)), [name for name, _ in rows])
    left.axvline(0, color="grey", lw=0.8)
    left.set(xlabel="rating (log-odds of beating SFT), 95% interval", title="sorted by gold reward")
    right.axhline(0, color="grey", lw=0.8)
    right.axvline(0, color="grey", lw=0.8)
    right.set(xlabel="proxy (reward model) minus SFT's", ylabel="gold reward minus SFT's",
              title="red: the proxy says better, gold says worse")
    fig.suptitle(title)
    fig.tight_layout()
    return Plot(fig)
