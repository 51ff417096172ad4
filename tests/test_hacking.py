import math

import pytest
import torch

from rlhf_kit.hacking import (
    TERMS,
    best_of_n,
    best_of_n_kl,
    best_of_n_select,
    beta_sweep,
    common_opening,
    empirical_best_of_n_kl,
    gao_curve,
    gao_fit,
    gao_peak_kl,
    gold_gain,
    hacked_samples,
    heldout_prompts,
    mean_terms,
    r_squared,
    sweep_run,
    term_shift,
    word_shift,
)
from rlhf_kit.ui.plots import overoptimisation_plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = dict(batch_size=4, minibatch_size=2, ppo_epochs=1, lr=1e-3, max_new_tokens=8)


@pytest.fixture(scope="module")
def sweep(micro_rm_ws):
    return beta_sweep(micro_rm_ws, [0.0, 0.5], steps=4, n_checkpoints=2, prompts=heldout_prompts(micro_rm_ws)[:2],
                      samples_per_prompt=2, **TINY)


@pytest.fixture(scope="module")
def bon(micro_rm_ws):
    return best_of_n(micro_rm_ws, ns=(1, 2, 4), prompts=heldout_prompts(micro_rm_ws)[:4])


def test_best_of_n_kl_is_log_n_minus_n_minus_one_over_n():
    assert best_of_n_kl(1) == 0.0
    assert math.isclose(best_of_n_kl(2), math.log(2) - 0.5)
    assert math.isclose(best_of_n_kl(16), math.log(16) - 15 / 16)
    assert all(best_of_n_kl(n) < best_of_n_kl(2 * n) for n in (1, 2, 4, 8))
    with pytest.raises(ValueError, match="n >= 1"):
        best_of_n_kl(0)


def test_empirical_best_of_n_kl_is_exact_for_distinct_samples_and_lower_with_repeats():
    # k distinct samples: the uniform distribution on k atoms, pi_n(i-th worst) = (i/k)^n - ((i-1)/k)^n
    k, n = 4, 2
    exact = sum(((i / k) ** n - ((i - 1) / k) ** n) * math.log(((i / k) ** n - ((i - 1) / k) ** n) * k)
                for i in range(1, k + 1))
    assert empirical_best_of_n_kl([0.3, -1.0, 2.0, 0.5], n) == pytest.approx(exact)
    assert empirical_best_of_n_kl([0.3, -1.0, 2.0, 0.5], 1) == pytest.approx(0.0, abs=1e-12)
    # many distinct samples approach the closed form from below; it is never exceeded
    rewards = torch.randn(4096, generator=torch.Generator().manual_seed(0)).tolist()
    for n in (2, 4, 16):
        assert best_of_n_kl(n) - 0.01 < empirical_best_of_n_kl(rewards, n) <= best_of_n_kl(n)
    # a repeated response is one atom: the picks concentrate less, the KL is lower
    texts = ["a", "b", "b", "c"]
    repeated = empirical_best_of_n_kl([0.0, 1.0, 1.0, 2.0], 4, texts)
    assert repeated < empirical_best_of_n_kl([0.0, 1.0, 1.5, 2.0], 4) <= best_of_n_kl(4)
    assert empirical_best_of_n_kl([1.0] * 4, 4, ["same"] * 4) == 0.0
    with pytest.raises(ValueError, match="n >= 1"):
        empirical_best_of_n_kl([0.0], 0)


def test_best_of_n_select_picks_the_best_of_each_group_of_each_prompt():
    rewards = torch.tensor([[0.1, 0.9, 0.4, 0.3], [2.0, -1.0, 0.5, 0.7]])
    assert best_of_n_select(rewards, 2).tolist() == [[1, 2], [0, 3]]
    assert best_of_n_select(rewards, 4).tolist() == [[1], [0]]
    assert best_of_n_select(rewards, 1).tolist() == [[0, 1, 2, 3]] * 2
    with pytest.raises(ValueError, match="dividing"):
        best_of_n_select(rewards, 3)


def test_gao_fit_recovers_known_parameters_and_r_squared():
    kl = torch.tensor([0.0, 0.5, 1.0, 2.0, 4.0, 9.0], dtype=torch.float64)
    for form, (alpha, beta) in (("bon", (1.2, 0.3)), ("rl", (0.7, 0.2))):
        gain = gao_curve(kl, alpha, beta, form)
        fitted = gao_fit(kl, gain, form)
        assert fitted.tolist() == pytest.approx([alpha, beta], abs=1e-9)
        assert r_squared(gain, gao_curve(kl, *fitted.tolist(), form)) == pytest.approx(1.0)
    assert gao_curve(torch.tensor([0.0]), 1.0, 1.0, "rl").item() == 0.0          # d log d -> 0 at d = 0
    # the peaks: d (alpha - beta d) at d = alpha / (2 beta); d (alpha - beta log d) at log d = alpha / beta - 1
    assert gao_peak_kl(1.2, 0.3, "bon") == pytest.approx(2.0 ** 2)
    assert gao_peak_kl(0.7, 0.2, "rl") == pytest.approx(math.exp(2.5) ** 2)
    assert gao_peak_kl(1.0, -0.1, "bon") == math.inf
    assert r_squared(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 2.0, 2.0])) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="'bon'"):
        gao_fit(kl, kl, "ppo")
    rows = [{"kl": 0.0, "gold": 1.5}, {"kl": -0.01, "gold": 1.7}, {"kl": 2.0, "gold": 1.4}]
    kl, gain = gold_gain(rows)
    assert kl.tolist() == [0.0, 0.0, 2.0] and gain.tolist() == pytest.approx([0.0, 0.2, -0.1])


def test_common_opening_names_the_template_and_its_share():
    samples = [{"prompt": "p", "response": r} for r in
               ["A stupid film about a dog. Fun.", "A stupid film about a dog. Sad.", "Lovely comedy."]]
    top = common_opening(samples, n_words=4)
    assert top["opening"] == "A stupid film about" and top["share"] == pytest.approx(2 / 3)
    assert top["example"] == "A stupid film about a dog. Fun."


def test_beta_sweep_gives_a_curve_per_beta(sweep):
    assert [(row["beta"], row["step"]) for row in sweep] == [(0.0, 0), (0.0, 2), (0.0, 4),
                                                             (0.5, 0), (0.5, 2), (0.5, 4)]
    for row in sweep:
        assert {"beta", "beta_now", "step", "kl", "train_kl", "history", "proxy", "gold", "format_rate",
                "samples"} <= set(row)
        assert len(row["samples"]) == 4 and all(math.isfinite(row[k]) for k in ("kl", "train_kl", "proxy", "gold"))
        assert len(row["history"]) == row["step"]
        # the KL is measured on the evaluation samples themselves: their mean is the row's
        assert row["kl"] == pytest.approx(sum(s["kl"] for s in row["samples"]) / 4)
    starts = [row for row in sweep if row["step"] == 0]
    # at step 0 the policy is the reference: every sample's log-ratio is 0
    assert all(row["train_kl"] == 0.0 and abs(row["kl"]) < 1e-5 for row in starts)
    assert any(row["kl"] != 0.0 for row in sweep if row["step"] > 0)       # (4 tiny steps: noise-sized)
    # Every run starts from the same SFT policy and evaluates on the same random streams.
    assert starts[0]["proxy"] == pytest.approx(starts[1]["proxy"], abs=1e-5)
    assert starts[0]["gold"] == pytest.approx(starts[1]["gold"], abs=1e-6)


def test_best_of_n_rows_and_the_proxy_of_the_pick_rises_with_n(bon):
    assert [row["n"] for row in bon] == [1, 2, 4]
    assert [row["kl_bound"] for row in bon] == [best_of_n_kl(n) for n in (1, 2, 4)]
    # measured from the samples: 0 for n = 1, rising with n, never above the closed form
    assert bon[0]["kl"] == 0.0 and bon[0]["kl"] <= bon[1]["kl"] <= bon[2]["kl"]
    assert all(row["kl"] <= row["kl_bound"] + 1e-12 for row in bon)
    assert all(0 < row["distinct"] <= 1 for row in bon)
    assert all(len(row["samples"]) == 4 for row in bon)
    # Each n = 2 pair's pick beats the mean of its pair, so the mean over the same samples can only rise.
    assert bon[0]["proxy"] <= bon[1]["proxy"] + 1e-6 <= bon[2]["proxy"] + 2e-6


def test_best_of_n_rejects_bad_sizes(micro_rm_ws):
    with pytest.raises(ValueError, match="n >= 1"):
        best_of_n(micro_rm_ws, ns=(0, 2))
    with pytest.raises(ValueError, match="must divide the largest"):
        best_of_n(micro_rm_ws, ns=(3, 4))


def test_best_of_n_runs_the_learners_select(micro_rm_ws):
    """best_of_n uses the select function it is given (the learner's, after `check`)."""
    calls = []

    def worst_of_n(rewards, n):
        calls.append(n)
        p, k = rewards.shape
        return rewards.reshape(p, k // n, n).argmin(-1) + torch.arange(k // n) * n

    prompts = heldout_prompts(micro_rm_ws)[:2]
    worst = best_of_n(micro_rm_ws, ns=(1, 2), prompts=prompts, select=worst_of_n)
    best = best_of_n(micro_rm_ws, ns=(1, 2), prompts=prompts)
    assert calls == [1, 2] and worst[0]["proxy"] == pytest.approx(best[0]["proxy"])
    assert worst[1]["proxy"] <= best[1]["proxy"]


def test_the_plot_renders_both_panels_with_a_line_per_beta_and_best_of_n(sweep, bon):
    plot = overoptimisation_plot(sweep, bon)
    assert plot._repr_png_().startswith(PNG_MAGIC)
    proxy_ax, gold_ax = plot.figure.axes
    assert len(proxy_ax.lines) == len(gold_ax.lines) == 3          # beta 0, beta 0.5, best-of-n
    xs = proxy_ax.lines[2].get_xdata()
    assert list(xs) == pytest.approx([math.sqrt(row["kl"]) for row in bon])


def test_term_shift_and_hacked_samples_explain_the_gold_reward(sweep):
    shift = term_shift(sweep, 0.0)
    assert [row["term"] for row in shift] == [*TERMS, "total"]
    assert shift[-1]["change"] == pytest.approx(sum(row["change"] for row in shift[:-1]))
    rows = hacked_samples(sweep, beta=0.0, k=3)
    assert len(rows) == 3
    for row in rows:
        assert row["gold"] == pytest.approx(sum(row[term] for term in TERMS))
    last = [row for row in sweep if row["beta"] == 0.0][-1]
    assert mean_terms(last["samples"])["total"] == pytest.approx(last["gold"])
    with pytest.raises(ValueError, match="no run at beta=0.25"):
        term_shift(sweep, 0.25)
    with pytest.raises(ValueError, match=r"no run at beta=0.25; it has betas \[0.0, 0.5\]"):
        hacked_samples(sweep, beta=0.25)


def test_sweep_run_gives_one_run_in_step_order():
    sweep = [{"beta": 0.1, "step": 4}, {"beta": 0.0, "step": 2}, {"beta": 0.1, "step": 0}, {"beta": 0.0, "step": 0}]
    assert [row["step"] for row in sweep_run(sweep, 0.1)] == [0, 4]
    assert sweep_run(sweep, 0.0) == [sweep[3], sweep[1]]
    with pytest.raises(ValueError, match=r"no run at beta=0.5; it has betas \[0.0, 0.1\]"):
        sweep_run(sweep, 0.5)


def _sweep_of(before: list[tuple[str, str]], after: list[tuple[str, str]]) -> list[dict]:
    def rows(pairs):
        return [{"prompt": p, "response": r} for p, r in pairs]

    return [{"beta": 0.0, "step": 0, "samples": rows(before)}, {"beta": 0.0, "step": 5, "samples": rows(after)}]


def test_word_shift_finds_the_words_a_run_took_up_per_requested_sentiment():
    pos = "### Instruction:\nWrite a positive review of a comedy about a dog.\n### Response:\n"
    neg = "### Instruction:\nWrite a negative review of a horror about a ghost.\n### Response:\n"
    sweep = _sweep_of([(pos, "A wonderful comedy."), (pos, "A fun dog film."), (neg, "Awful.")],
                      [(pos, "A stupid stupid comedy."), (pos, "Stupid, wonderful dog."), (neg, "Awful ghost.")])
    top = word_shift(sweep, 0.0, asked="positive", k=2)
    # "stupid" twice in one response counts once: it is in 2 of the 2 positive responses after, 0 before
    assert top[0] == {"word": "stupid", "SFT": 0.0, "after PPO": 1.0, "change": 1.0, "lexicon": "negative"}
    assert top[1]["change"] == pytest.approx(0.0) and top[1]["word"] == "comedy"     # ties go alphabetically
    everyone = {row["word"]: row for row in word_shift(sweep, 0.0, k=20)}
    assert everyone["ghost"]["change"] == pytest.approx(1 / 3) and everyone["wonderful"]["lexicon"] == "positive"
    with pytest.raises(ValueError, match='"positive" or "negative"'):
        word_shift(sweep, 0.0, asked="happy")
    with pytest.raises(ValueError, match="no run at beta=0.5"):
        word_shift(sweep, 0.5)
