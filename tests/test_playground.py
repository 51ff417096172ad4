"""The PPO playground driven from code: sliders reach the PPOConfig, runs are kept and overlaid, Stop ends a
threaded run early, tokens are coloured one span each, bad settings land in the status line."""

import re
import time

import matplotlib.pyplot as plt
import pytest
from threaded_runs import run_then_stop

from rlhf_kit.ppo import PPOConfig
from rlhf_kit.ui.playground import PANELS, Playground
from rlhf_kit.ui.plots import kl_estimators_plot

# A fast trainer on the MICRO workspace (as in test_ppo.py).
TINY = PPOConfig(batch_size=4, minibatch_size=2, ppo_epochs=2, lr=1e-3, max_new_tokens=8, steps=2)


def _no_trainer(ws, config, losses=None):
    raise AssertionError("no trainer should be built")


def test_sliders_reach_the_trainer_config_and_the_dashboard(micro_rm_ws):
    figures_before = plt.get_fignums()
    pg = Playground(micro_rm_ws, base_config=TINY)
    pg.beta.value, pg.clip_eps.value, pg.lr.value, pg.steps.value = 0.2, 0.1, 3e-4, 2
    pressed = time.perf_counter()
    run = pg.run_sync()
    elapsed = time.perf_counter() - pressed
    config = pg.trainer.config
    assert (config.beta, config.clip_eps, config.lr, config.steps) == (0.2, 0.1, 3e-4, 2)
    assert config.batch_size == TINY.batch_size                 # the rest comes from base_config
    assert run.status == "finished" and len(run.history) == 2 and pg.runs == [run]
    assert [s["beta"] for s in run.history] == [0.2, 0.2]
    assert run.label == "#1 beta=0.2 eps=0.1 lr=3e-4"
    assert "finished after 2 of 2 steps" in pg.status.value
    assert 0 < run.first_curve_seconds < elapsed                 # the first step's curve, before the run's end
    assert f"; first curve {run.first_curve_seconds:.1f} s after Run)" in pg.status.value
    assert bytes(pg.dashboard.value).startswith(b"\x89PNG")
    assert pg.samples.value.count("<tr>") == 1 + min(4, len(pg.trainer.last_batch))
    assert pg.progress.value == 2 and not pg.running and not pg.run_button.disabled and pg.stop_button.disabled
    assert plt.get_fignums() == figures_before                   # no figure left open

    pg.adaptive_kl.value, pg.kl_target.value = True, 0.5         # adaptive KL moves beta from step to step
    assert not pg.kl_target.disabled
    run = pg.run_sync(steps=2)
    assert pg.trainer.config.adaptive_kl and pg.trainer.config.kl_target == 0.5
    assert run.history[0]["beta"] == 0.2 and run.history[1]["beta"] != 0.2
    assert "adaptive KL target=0.5" in run.label


def test_reset_puts_every_slider_back_to_the_base_config():
    pg = Playground(None, base_config=TINY, trainer_factory=_no_trainer)
    start = pg.settings()
    assert start == {name: getattr(TINY, name) for name in start}
    pg.beta.value, pg.clip_eps.value, pg.lr.value, pg.steps.value = 0.0, 0.5, 3e-3, 7
    pg.adaptive_kl.value, pg.kl_target.value = True, 2.5
    assert pg.settings() != start
    pg.reset_button.click()
    assert pg.settings() == start and pg.kl_target.disabled and "reset" in pg.status.value


def test_runs_with_different_beta_are_kept_and_overlaid(micro_rm_ws):
    pg = Playground(micro_rm_ws, base_config=TINY)
    pg.steps.value = 1
    pg.beta.value = 0.0
    first = pg.run_sync()
    pg.beta.value = 0.1
    second = pg.run_sync()
    assert [r.settings["beta"] for r in pg.runs] == [0.0, 0.1] and pg.runs == [first, second]
    assert first.history[0]["beta"] == 0.0 and second.history[0]["beta"] == 0.1
    figure = pg.dashboard_figure()
    axes = figure.axes
    assert [ax.get_title() for ax in axes] == [title for _, title in PANELS]
    kl_panel = [key for key, _ in PANELS].index("kl")
    assert all(len(ax.get_lines()) == 2 for i, ax in enumerate(axes) if i != kl_panel)
    assert len(axes[kl_panel].get_lines()) == 2 * 2 + 1          # k1 and k3 per run, and the zero line
    labels = [text.get_text() for text in figure.legends[0].get_texts()]
    assert labels == ["#1 beta=0 eps=0.2 lr=0.001", "#2 beta=0.1 eps=0.2 lr=0.001"]
    pg.clear_runs()
    assert pg.runs == [] and all(len(ax.get_lines()) == 0 for ax in pg.dashboard_figure().axes)


def test_stop_ends_a_threaded_run_early_and_keeps_it(micro_rm_ws):
    pg = Playground(micro_rm_ws, base_config=TINY)
    pg.steps.value = 50
    run = run_then_stop(pg)
    assert 1 <= len(run.history) < 50
    assert f"stopped after {len(run.history)} of 50 steps" in pg.status.value


def test_token_view_colours_each_response_token(micro_rm_ws):
    pg = Playground(micro_rm_ws, base_config=TINY)
    pg.run_sync(steps=1)
    batch = pg.trainer.last_batch
    for what, key in (("kl", "kl"), ("advantage", "advantages")):
        for row in range(len(batch)):
            view = pg.token_view(row, what=what).data
            spans = re.findall(r"<span class='rk-tok' title='(\S+) (\S+) [^']*' style='background:(#[0-9a-f]{6})",
                               view)
            assert len(spans) == len(batch[row]["tokens"]) >= 1
            assert [float(value) for _, value, _ in spans] == pytest.approx(batch[row][key], abs=1e-4)
            assert {name for name, _, _ in spans} == {what}
            assert "linear-gradient" in view                      # the legend
    assert pg.token_view().data == pg.token_view(0, "kl").data
    assert pg.tokens.value == pg.token_view(0, "kl").data       # the widget's own token view
    with pytest.raises(ValueError, match="'kl', 'advantage'"):
        pg.token_view(what="logprob")
    with pytest.raises(ValueError, match="row must be between 0 and"):
        pg.token_view(row=len(batch))


def test_bad_settings_show_in_the_status_line_and_start_nothing():
    pg = Playground(None, base_config=TINY, trainer_factory=_no_trainer)
    assert pg.run_sync(beta=-0.1) is None
    assert "PPOConfig.beta must be a finite number &gt;= 0" in pg.status.value and "got -0.1" in pg.status.value
    assert pg.run(clip_eps=0.0) is None and "clip_eps must be between 0 and 1" in pg.status.value
    assert pg.run_sync(betta=0.1) is None and "PPOConfig has no field" in pg.status.value
    assert pg.runs == [] and not pg.running and not pg.run_button.disabled


def test_an_error_in_the_thread_lands_in_the_status_line():
    def broken(ws, config, losses=None):
        raise RuntimeError("the sft stage is missing")

    pg = Playground(None, base_config=TINY, trainer_factory=broken)
    assert pg.run() is not None and pg.wait(timeout=30)
    assert "failed: RuntimeError: the sft stage is missing" in pg.status.value
    assert pg.runs == [] and not pg.running
    with pytest.raises(RuntimeError, match="sft stage is missing"):   # a blocking run raises it too
        pg.run_sync()


def test_k1_and_k3_batch_means_are_recorded_and_drawn(micro_rm_ws):
    """Each step records the batch-mean KL per response by k1 (the estimator PPO penalises by default, so it is
    the `kl` stat) and by k3 (never negative); the dashboard's KL panel draws both, and kl_estimators_plot too."""
    pg = Playground(micro_rm_ws, base_config=TINY)
    run = pg.run_sync(steps=2, beta=0.0)
    for stats in run.history:
        assert stats["kl_k1"] == pytest.approx(stats["kl"], abs=1e-6) and stats["kl_k3"] >= 0
    assert run.history[0]["kl_k1"] == run.history[0]["kl_k3"] == 0.0      # step 1 samples from the reference itself
    batch = pg.trainer.last_batch
    assert sum(sum(row["kl"]) for row in batch) / len(batch) == pytest.approx(run.history[-1]["kl_k1"], abs=1e-5)
    kl_axes = pg.dashboard_figure().axes[[key for key, _ in PANELS].index("kl")]
    solid, dashed, zero = kl_axes.get_lines()
    assert list(solid.get_ydata()) == [s["kl_k1"] for s in run.history]
    assert list(dashed.get_ydata()) == [s["kl_k3"] for s in run.history] and dashed.get_linestyle() == "--"
    assert list(zero.get_ydata()) == [0.0, 0.0]
    figure = kl_estimators_plot([(run.label, run.history)]).figure
    assert [len(ax.get_lines()) for ax in figure.axes] == [3, 3]
    assert list(figure.axes[0].get_lines()[1].get_ydata()) == [s["kl_k3"] for s in run.history]
