import torch

from rlhf_kit.reward import calibration
from rlhf_kit.ui.plots import calibration_plot, margin_histogram, probe_plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plots_render_as_png_without_pyplot():
    margins = torch.linspace(-3, 3, 100)
    for plot in (margin_histogram(margins), calibration_plot(calibration(margins)),
                 probe_plot([{"kind": "clean", "proxy": 0.5, "gold": 2.0},
                             {"kind": "loop", "proxy": 1.0, "gold": -1.0}])):
        assert plot._repr_png_().startswith(PNG_MAGIC)


def test_probe_plot_shows_the_mean_per_kind():
    rows = [{"kind": "loop", "proxy": r, "gold": -1.0} for r in (1.0, 3.0)]
    ax = probe_plot(rows).figure.axes[0]
    heights = sorted(round(bar.get_height(), 6) for bar in ax.patches)
    assert heights == [-1.0, 2.0]               # gold -1, mean reward (1 + 3) / 2


def test_updates_and_methods_plots_draw_what_they_are_given():
    from rlhf_kit.ui.plots import methods_plot, updates_plot

    updates = [{"update": i + 1, "loss": 0.01 * i, "grad_norm": 1.0 + i, "epoch": 1 + i // 2} for i in range(4)]
    plot = updates_plot(updates)
    assert plot._repr_png_().startswith(PNG_MAGIC)
    grad_lines = [line for line in plot.figure.axes[1].lines if line.get_marker() == "o"]
    assert [list(line.get_ydata()) for line in grad_lines] == [[1.0, 2.0], [3.0, 4.0]]
    rows = [{"name": "SFT", "gold": 1.6, "kl": 0.0},
            {"name": "PPO", "gold": 2.3, "kl": 9.7, "seconds_per_step": 2.0, "peak_memory_mib": 300.0},
            {"name": "GRPO", "gold": 2.29, "kl": 10.9, "seconds_per_step": 1.5, "peak_memory_mib": None}]
    plot = methods_plot(rows)
    assert plot._repr_png_().startswith(PNG_MAGIC)
    assert [round(bar.get_height(), 3) for bar in plot.figure.axes[1].patches] == [2.0, 1.5]
    assert [text.get_text() for text in plot.figure.axes[0].texts] == ["SFT", "PPO", "GRPO"]
