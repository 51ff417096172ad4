"""The DPO playground driven from code: sliders reach the DPOConfig, every run is evaluated at step 0, every
`eval_every` steps and at its last step, the learner's functions are the ones trained with, Stop ends a threaded run
early, the four panels draw the recorded numbers, bad settings land in the status line and lose no kept run."""

import math

import matplotlib.pyplot as plt
import pytest
from threaded_runs import run_then_stop

from rlhf_kit import losses
from rlhf_kit.configs import DPOConfig
from rlhf_kit.preferences import PreferenceStore
from rlhf_kit.ui import DPOPlayground
from rlhf_kit.ui.dpo_playground import PANELS
from rlhf_kit.world import heldout_prompts, load_world

EVAL_KEYS = {"step", "epoch", "heldout_accuracy", "heldout_gold_accuracy", "heldout_margin", "heldout_chosen_logps",
             "heldout_rejected_logps", "proxy", "gold", "format_rate", "kl", "response_length", "samples"}


def test_sliders_reach_the_config_and_every_run_is_evaluated_at_its_points(micro_rm_ws):
    figures_before = plt.get_fignums()
    pg = DPOPlayground(micro_rm_ws, eval_prompts=4)
    assert pg.settings() == {"beta": 0.1, "lr": 1e-4, "epochs": 1, "loss": "sigmoid"}    # the micro preset's
    pg.beta.value, pg.lr.value, pg.epochs.value, pg.loss.value = 0.5, 3e-4, 3, "ipo"
    drawn = []                                                  # the dashboard's redraws, with the steps done
    draw = pg._draw
    pg._draw = lambda: (drawn.append(len(pg.runs[-1].history) if pg.runs else None), draw())
    run = pg.run_sync()
    config = pg.trainer.config
    assert (config.beta, config.lr, config.epochs, config.loss) == (0.5, 3e-4, 3, "ipo")
    assert config.batch_size == micro_rm_ws.preset.dpo_batch_size                    # the rest from the preset
    assert pg.trainer.loss_fn is losses.ipo_loss
    total = math.ceil(3 * len(pg.trainer.pairs) / config.batch_size)
    assert run.status == "finished" and run.total_steps == total == len(run.history) and pg.runs == [run]
    assert [s["step"] for s in run.history] == list(range(1, total + 1))
    every = math.ceil(total / 4)                                                      # about 4 evaluations a run
    assert [e["step"] for e in run.evaluations] == sorted({0, *range(every, total + 1, every), total})
    assert {e["step"] for e in run.evaluations} <= set(drawn)                       # redrawn live at each one
    assert pg.checkpoints is run.evaluations and set(run.evaluations[0]) == EVAL_KEYS
    first, last = run.evaluations[0], run.evaluations[-1]
    assert first["kl"] == 0.0 and first["heldout_margin"] == 0.0 and first["epoch"] == 0.0     # the SFT policy
    assert last["kl"] > 0 and last["heldout_margin"] != 0.0 and last["epoch"] == run.history[-1]["epoch"]
    assert [s["prompt"] for s in last["samples"]] == heldout_prompts(load_world(micro_rm_ws.require("world")))[:4]
    assert run.label == "#1 IPO beta=0.5 lr=3e-4 epochs=3"
    assert f"finished after {total} of {total} steps" in pg.status.value and "Held-out accuracy" in pg.status.value
    assert bytes(pg.dashboard.value).startswith(b"\x89PNG")
    assert pg.samples.value.count("<tr>") == 1 + 4 and f"step {total}" in pg.samples.value
    assert pg.progress.value == total and not pg.running and not pg.run_button.disabled and pg.stop_button.disabled
    assert plt.get_fignums() == figures_before                                        # no figure left open

    pg.reset_button.click()
    assert pg.settings() == {"beta": 0.1, "lr": 1e-4, "epochs": 1, "loss": "sigmoid"}
    second = pg.run_sync(beta=0.2, eval_temperature=1.0)       # overrides: this run only, any DPOConfig field
    assert pg.trainer.config.beta == 0.2 and pg.trainer.config.eval_temperature == 1.0 and pg.beta.value == 0.1
    assert pg.trainer.loss_fn is losses.dpo_loss and second.label == "#2 DPO beta=0.2 lr=1e-4 epochs=1 " \
                                                                      "eval_temperature=1.0"
    assert pg.runs == [run, second] and pg.checkpoints is second.evaluations


@pytest.mark.slow     # 7-9 s: make test runs it, make test-fast (under 2 minutes) does not
def test_eval_every_sets_the_evaluation_points_and_the_learners_functions_are_trained_with(micro_rm_ws):
    calls = {"loss": 0, "logprobs": 0}

    def my_dpo_loss(*args, **kwargs):
        calls["loss"] += 1
        return losses.dpo_loss(*args, **kwargs)

    def my_logprobs(*args):
        calls["logprobs"] += 1
        return losses.sequence_logprobs(*args)

    pg = DPOPlayground(micro_rm_ws, loss_fn=my_dpo_loss, logprobs_fn=my_logprobs, eval_every=3, eval_prompts=2)
    run = pg.run_sync(epochs=2)
    total = run.total_steps
    assert total >= 4 and [e["step"] for e in run.evaluations] == sorted({0, *range(3, total + 1, 3), total})
    assert calls["loss"] == total and calls["logprobs"] > total                 # training, reference, evaluation
    assert pg.trainer.whose() == {"loss_fn": f"yours ({__name__})", "logprobs_fn": f"yours ({__name__})"}
    pg.loss.value = "ipo"                                                        # a callable is DPO's loss only
    pg.run_sync()
    assert pg.trainer.loss_fn is losses.ipo_loss and pg.trainer.logprobs_fn is my_logprobs
    pg = DPOPlayground(micro_rm_ws, loss_fn={"ipo": my_dpo_loss}, eval_prompts=2)
    pg.run_sync(loss="ipo")
    assert pg.trainer.loss_fn is my_dpo_loss


@pytest.mark.slow     # 7-9 s: make test runs it, make test-fast (under 2 minutes) does not
def test_the_learners_labels_are_trained_on_too(micro_rm_ws, tmp_path):
    """Like lab 06's sweep (`dpo.workspace_pairs(ws, extra_stores)`), the playground trains on the learner's label
    files as well as the simulated labeller's pairs."""
    labels = PreferenceStore(tmp_path / "you.jsonl")
    prompt = "### Instruction:\nWrite a positive review of a comedy about a dog.\n### Response:\n"
    labels.record("p1", prompt, "A warm, funny film.", "A dull film.", "A", annotator="you")
    without = DPOPlayground(micro_rm_ws, eval_prompts=1)
    without.run_sync()
    with_labels = DPOPlayground(micro_rm_ws, eval_prompts=1, extra_stores=[labels.path])
    with_labels.run_sync()
    assert len(with_labels.trainer.pairs) == len(without.trainer.pairs) + 1
    assert with_labels.trainer.pairs[-1]["chosen"] == "A warm, funny film."


@pytest.mark.parametrize("kwargs, message", [
    (dict(eval_every=0), r"DPOPlayground\(eval_every=...\) must be a whole number >= 1; got 0"),
    (dict(eval_prompts=2.5), r"DPOPlayground\(eval_prompts=...\) must be a whole number >= 1; got 2.5"),
    (dict(loss_fn={"hinge": losses.dpo_loss}), r"got a loss for 'hinge'; the losses are 'sigmoid', 'ipo'"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DPOPlayground(None, base_config=DPOConfig(), **kwargs)


def test_stop_ends_a_threaded_run_early_and_keeps_it_measured(micro_rm_ws):
    pg = DPOPlayground(micro_rm_ws, eval_prompts=2)
    pg.epochs.value = 8
    run = run_then_stop(pg)
    assert 1 <= len(run.history) < run.total_steps
    assert run.evaluations[0]["step"] == 0 and run.evaluations[-1]["step"] == len(run.history)  # measured at its end
    assert f"stopped after {len(run.history)} of {run.total_steps} steps" in pg.status.value


def test_the_four_panels_draw_every_kept_run(micro_rm_ws):
    pg = DPOPlayground(micro_rm_ws, eval_every=2, eval_prompts=2)
    first = pg.run_sync(beta=0.1)
    second = pg.run_sync(beta=1.0)
    figure = pg.dashboard_figure()
    logps, loss, pairs, fresh, margin = figure.axes
    assert [ax.get_title() for ax in (logps, loss, pairs, fresh)] == list(PANELS)
    assert "both usually fall" in logps.get_title()
    for i, run in enumerate((first, second)):
        steps = [s["step"] for s in run.history]
        at = [e["step"] for e in run.evaluations]
        chosen, rejected = logps.get_lines()[2 * i: 2 * i + 2]
        assert list(chosen.get_xdata()) == steps
        assert list(chosen.get_ydata()) == pytest.approx([s["chosen_reward"] / run.config.beta for s in run.history])
        assert list(rejected.get_ydata()) == pytest.approx([s["rejected_reward"] / run.config.beta
                                                            for s in run.history])
        assert rejected.get_linestyle() == "--"
        assert list(loss.get_lines()[i].get_ydata()) == [s["loss"] for s in run.history]
        accuracy, gold_accuracy = pairs.get_lines()[2 * i: 2 * i + 2]
        assert list(accuracy.get_xdata()) == at and len(at) >= 2
        assert list(accuracy.get_ydata()) == [e["heldout_accuracy"] for e in run.evaluations]
        assert list(gold_accuracy.get_ydata()) == [e["heldout_gold_accuracy"] for e in run.evaluations]
        assert list(margin.get_lines()[i].get_ydata()) == [e["heldout_margin"] for e in run.evaluations]
        gold, proxy = fresh.get_lines()[2 * i: 2 * i + 2]
        assert list(gold.get_xdata()) == [e["kl"] for e in run.evaluations]
        assert list(gold.get_ydata()) == [e["gold"] for e in run.evaluations]
        assert list(proxy.get_ydata()) == [e["proxy"] for e in run.evaluations]
    assert list(logps.get_lines()[-1].get_ydata()) == [0.0, 0.0]                  # the line at 0
    labels = [text.get_text() for text in figure.legends[0].get_texts()]
    assert labels == ["#1 DPO beta=0.1 lr=1e-4 epochs=1", "#2 DPO beta=1 lr=1e-4 epochs=1"]
    assert pg.sample_table(1).data.count("<tr>") == 2 and "#2 DPO beta=1" in pg.sample_table(1).data
    pg.clear_runs()
    assert pg.runs == [] and pg.checkpoints == [] and all(not ax.get_lines() for ax in pg.dashboard_figure().axes)


def test_bad_settings_show_in_the_status_line_and_lose_no_run(micro_rm_ws):
    pg = DPOPlayground(micro_rm_ws, eval_prompts=2)
    kept = pg.run_sync()
    for overrides, message in ((dict(beta=0.0), "DPOConfig.beta must be a finite number &gt; 0; got 0.0"),
                               (dict(beta=-0.1), "DPOConfig.beta must be a finite number &gt; 0; got -0.1"),
                               (dict(loss="hinge"), "DPOConfig.loss must be one of 'sigmoid', 'ipo'; got 'hinge'"),
                               (dict(betta=0.1), "DPOConfig has no field 'betta'")):
        assert pg.run_sync(**overrides) is None
        assert "Bad setting" in pg.status.value and message.replace("'", "&#x27;") in pg.status.value
        assert pg.runs == [kept] and pg.checkpoints is kept.evaluations and not pg.running
    assert not pg.run_button.disabled and pg.stop_button.disabled
