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
