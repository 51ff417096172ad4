"""Lab 08's leaderboard: the policies as stages, the judges, the board's numbers and their invariants, the export,
the learner's functions taking part, a policy with another tokenizer, and `rlhf-kit eval` / `rlhf-kit build`."""

import json
import math
import shutil

import pytest
import torch

from rlhf_kit import leaderboard as lb
from rlhf_kit import ratings
from rlhf_kit.cli import main
from rlhf_kit.workspace import Workspace, WorkspaceError
from rlhf_kit.world import build_world, heldout_pages

PROMPT = "### Instruction:\nWrite a positive review of a comedy about a dog.\n### Response:\n"


def _copy(ws, home) -> Workspace:
    """A private copy of a session workspace, so building stages here leaves the shared one as it was."""
    shutil.copytree(ws.root, home / ws.root.name)
    return Workspace(ws.preset, home=home, seed=ws.seed)


@pytest.fixture(scope="module")
def built(micro_rm_ws, tmp_path_factory):
    """A copy of the micro workspace with every policy of the board built, and its board."""
    ws = _copy(micro_rm_ws, tmp_path_factory.mktemp("board"))
    status = lb.ensure_policies(ws)
    assert all(s["ready"] for s in status.values()), status
    return ws, lb.leaderboard(ws, progress=False, n_boot=50)


def test_heldout_pages_are_new_pages_of_the_same_world():
    world = build_world(0, n_corpus_docs=200, n_demos=10, n_heldout=4)
    pages = heldout_pages(0, 20)
    assert pages == heldout_pages(0, 20) and pages != heldout_pages(1, 20)
    assert not set(pages) & set(world.corpus)
    assert all(len(page.split()) > 10 for page in pages)


def test_missing_policies_are_listed_with_the_command_that_builds_them(micro_rm_ws, tmp_path):
    ws = _copy(micro_rm_ws, tmp_path)
    status = lb.policy_status(ws)
    assert [n for n, s in status.items() if s["ready"]] == ["base", "sft", "best-of-4"]
    assert status["ppo-beta0"]["problem"] == "its 'hacked' stage is missing"
    assert status["ppo-beta0"]["command"] == f"rlhf-kit build hacked --preset micro --seed 0 --workspace {tmp_path}"
    board = lb.leaderboard(ws, judges=["gold", "rm"], progress=False, n_boot=20)
    assert list(board["policies"]) == ["base", "sft", "best-of-4"]
    assert set(board["missing"]) == {"ppo", "ppo-beta0", "dpo", "grpo", "grpo-ai"}
    frame = lb.leaderboard_frame(board)
    assert "rlhf-kit build grpo-ai" in frame.loc["grpo-ai", "note"] and frame.loc["sft", "note"] == ""
    with pytest.raises(ValueError, match="unknown policies 'ppo2'.*base, sft"):
        lb.policy_status(ws, ["ppo2"])
    with pytest.raises(ValueError, match="unknown judges 'people'"):
        lb.leaderboard(ws, judges=["people"])


@pytest.mark.slow
def test_a_stale_policy_is_not_ranked_and_says_why(built, tmp_path):
    ws, _ = built
    record = json.loads((ws.path("dpo") / "DONE.json").read_text())
    record["settings"]["dpo_beta"] = 0.5
    stale = _copy(ws, tmp_path)
    (stale.path("dpo") / "DONE.json").write_text(json.dumps(record))
    status = lb.policy_status(stale, ["dpo"])["dpo"]
    assert not status["ready"] and "other 'micro' settings (dpo_beta 0.5 -> 0.1)" in status["problem"]


@pytest.mark.slow
def test_the_hacked_stage_is_lab_05s_beta_zero_run(built):
    ws, _ = built
    config = ws.metrics("hacked")["config"]
    assert config["beta"] == 0.0 and config["lr"] == pytest.approx(4 * ws.preset.ppo_lr)
    assert ws.metrics("grpo-ai")["reward"] == "ai-reward" and ws.metrics("ai-reward")["n_ai_labels"] > 0


@pytest.mark.slow
def test_the_board_holds_every_policy_with_its_numbers(built):
    ws, board = built
    policies = board["policies"]
    assert list(policies) == list(lb.POLICIES)
    for name, row in policies.items():
        assert set(row) >= {"rating", "rating_ci", "gold", "proxy", "kl", "length", "distinct_2", "alignment_tax",
                            "win_rate_vs_sft"}
        low, high = row["rating_ci"]
        assert low <= row["rating"] + 1e-6 and row["rating"] <= high + 1e-6, name
        assert 0 <= row["distinct_2"] <= 1 and row["length"] > 0
    sft = policies["sft"]
    assert sft["rating"] == 0 and sft["rating_ci"] == [0, 0] and sft["kl"] == 0 and sft["win_rate_vs_sft"] is None
    assert policies["base"]["alignment_tax"] == 0
    assert policies["best-of-4"]["proxy"] > sft["proxy"]                       # it keeps the reward model's favourite
    assert policies["best-of-4"]["alignment_tax"] == sft["alignment_tax"]       # it is the SFT model
    assert board["proxy_up_gold_down"] == [n for n, r in policies.items()
                                           if r["proxy"] > sft["proxy"] and r["gold"] < sft["gold"]]
    for judge, rates in board["win_rates"].items():
        for name, (rate, low, high) in rates.items():
            assert 0 <= low <= rate <= high <= 1, (judge, name)
    agreement = board["judge_agreement"]
    assert set(agreement) == {"gold", "rm", "labeller", "ai"}
    assert all(agreement[j][j] == 1.0 for j in agreement)
    assert board["position_bias"]["flip_rate"] == 0.0          # the embedding judge scores each answer alone


@pytest.mark.slow
def test_every_policy_answers_the_same_instructions_in_the_same_order(built):
    _, board = built
    order = [[s["prompt"] for s in samples] for samples in board["samples"].values()]
    assert all(o == order[0] for o in order)
    assert len(order[0]) == board["n_prompts"] * board["samples_per_prompt"]


def test_matches_score_each_slot_by_each_judge():
    def result(golds, proxies, texts):
        return {"samples": [{"prompt": PROMPT, "response": t, "gold": g, "proxy": p}
                            for g, p, t in zip(golds, proxies, texts)]}

    results = {"x": result([1.0, 0.0, 2.0, 0.5], [0.0, 1.0, 0.0, 0.0], ["a", "b", "c", "d"]),
               "y": result([0.0, 1.0, 2.0, 0.5], [1.0, 0.0, 0.0, 0.0], ["e", "f", "g", "d"])}
    matches, position = lb.judge_matches(results, n_prompts=2, judges=["gold", "rm", "labeller"])
    assert matches.outcomes["gold"].tolist() == [1.0, 0.0, 0.5, 0.5]
    assert matches.outcomes["rm"].tolist() == [0.0, 1.0, 0.5, 0.5]
    assert matches.outcomes["labeller"][3] == 0.5                        # the same answer ties for every judge
    assert matches.prompt.tolist() == [0, 0, 1, 1] and matches.slot.tolist() == [0, 1, 0, 1]
    assert matches.between("y", "x", "gold").tolist() == [[0.0, 1.0], [0.5, 0.5]]
    assert matches.table("gold")[:, :2].tolist() == [[0, 1]] * 4 and position == {}
    agreement = lb.judge_agreement(matches)
    assert agreement["gold"]["rm"] == 0.0 and agreement["gold"]["gold"] == 1.0


@pytest.mark.slow
def test_the_learners_functions_are_the_ones_used(built):
    ws, _ = built
    calls = []

    def my_win_rate(a, b, tie_margin=0.0, n_boot=1000, seed=0):
        calls.append("win_rate")
        return 0.25, 0.125, 0.5

    def my_ratings(outcomes, n_players, anchor=0):
        calls.append("ratings")
        return ratings.bradley_terry_ratings(outcomes, n_players, anchor=anchor) + 1.0

    def my_distinct(responses, n):
        calls.append("distinct")
        return 0.75

    board = lb.leaderboard(ws, policies=["sft", "ppo"], judges=["gold"], win_rate_fn=my_win_rate,
                           ratings_fn=my_ratings, distinct_fn=my_distinct, progress=False, n_boot=10)
    assert {"win_rate", "ratings", "distinct"} <= set(calls)
    assert board["policies"]["ppo"]["win_rate_vs_sft"] == [0.25, 0.125, 0.5]
    assert board["policies"]["sft"]["rating"] == 1.0 and board["policies"]["ppo"]["distinct_2"] == 0.75


@pytest.mark.slow
def test_a_policy_with_another_tokenizer_is_judged_through_its_text(built, tmp_path):
    from rlhf_kit.models import tiny_gpt2, train_tokenizer

    ws, _ = built
    tokenizer = train_tokenizer(heldout_pages(5, 40), 300)
    model = tiny_gpt2(ws.preset, tokenizer)
    model.save_pretrained(tmp_path / "mine")
    tokenizer.save_pretrained(tmp_path / "mine")
    board = lb.leaderboard(ws, policies=["sft"], judges=["gold"], extra={"mine": tmp_path / "mine"}, progress=False,
                           n_boot=10)
    mine = board["policies"]["mine"]
    assert mine["kl"] is None and mine["alignment_tax"] is None          # not comparable across tokenizers
    assert isinstance(mine["gold"], float) and mine["stage"] == str(tmp_path / "mine")
    assert lb.leaderboard_frame(board).loc["mine", "note"] == "another tokenizer: KL and alignment tax not comparable"
    with pytest.raises(ValueError, match="taken by the course's policies"):
        lb.leaderboard(ws, extra={"ppo": tmp_path / "mine"})


@pytest.mark.slow
def test_export_writes_the_table_the_json_and_a_report(built, tmp_path):
    _, board = built
    paths = lb.export(board, tmp_path / "out")
    lines = paths["md"].read_text().splitlines()
    assert lines[0].startswith("| policy | rating |") and len(lines) == 2 + len(lb.POLICIES)
    assert paths["csv"].read_text().count("\n") == 1 + len(lb.POLICIES)
    assert set(json.loads(paths["json"].read_text())["policies"]) == set(lb.POLICIES)
    html = paths["html"].read_text()
    assert "data:image/png;base64," in html and "Judge agreement" in html


def test_without_sft_or_reward_there_is_no_board(micro_ws, tmp_path):
    ws = Workspace(micro_ws.preset, home=tmp_path, seed=0)
    with pytest.raises(WorkspaceError, match="'sft' artefact is missing"):
        lb.leaderboard(ws)


@pytest.mark.slow
def test_cli_eval_prints_the_board_as_json(built, capsys):
    ws, _ = built
    code = main(["eval", "--preset", "micro", "--workspace", str(ws.home), "--policies", "sft,ppo,ppo-beta0",
                 "--judges", "gold,rm", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["policies"]) == {"sft", "ppo", "ppo-beta0"} and "judge_agreement" in result
    assert set(result["policies"]["ppo"]) >= {"rating", "rating_ci", "gold", "proxy", "kl", "length", "distinct_2",
                                              "alignment_tax", "win_rate_vs_sft"}
    assert result["seconds"] > 0 and result["files"]["html"].endswith("report.html")


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--policies", "sft,ppo2"], "--policies: unknown 'ppo2'"),
    (["--judges", "people"], "--judges: unknown 'people'"),
    (["--samples", "0"], "--samples must be at least 1"),
])
def test_cli_eval_bad_input_is_one_line(built, capsys, args, message):
    ws, _ = built
    assert main(["eval", "--preset", "micro", "--workspace", str(ws.home), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_cli_build_builds_one_stage(micro_rm_ws, tmp_path, capsys):
    ws = _copy(micro_rm_ws, tmp_path)
    assert main(["build", "nothing", "--preset", "micro", "--workspace", str(tmp_path)]) == 2
    assert "unknown stage 'nothing'" in capsys.readouterr().err
    assert main(["build", "hacked", "--preset", "micro", "--workspace", str(tmp_path), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["stage"] == "hacked" and metrics["beta"] == 0.0 and ws.is_done("hacked")


def test_page_loss_is_the_mean_token_loss(micro_ws):
    from rlhf_kit.models import load_causal_lm

    model, tokenizer = load_causal_lm(micro_ws.path("base"))
    page = heldout_pages(0, 1)[0]
    ids = tokenizer(page, return_tensors="pt", truncation=True, max_length=32)["input_ids"]
    with torch.no_grad():
        expected = model(input_ids=ids, labels=ids).loss.item()
    assert lb.page_loss(model, tokenizer, [page], 32) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="no page of 2 or more tokens"):
        lb.page_loss(model, tokenizer, [""], 32)


def test_best_of_n_answers_every_instruction_even_a_repeated_one(micro_rm_ws):
    """The `lab` world repeats each held-out instruction twice; best-of-n once dropped the repeats' answers."""
    from rlhf_kit.models import load_causal_lm
    from rlhf_kit.reward import RewardScorer

    model, tokenizer = load_causal_lm(micro_rm_ws.path("sft"))
    result = lb.best_of_n_policy(micro_rm_ws, model, tokenizer, RewardScorer(micro_rm_ws.path("reward")),
                                 [PROMPT, PROMPT, PROMPT.replace("dog", "cat")], samples_per_prompt=2, n=3)
    assert [row["prompt"] for row in result["samples"]] == [PROMPT] * 4 + [PROMPT.replace("dog", "cat")] * 2
    assert all(0 <= row["kl"] <= math.log(3) for row in result["samples"])
