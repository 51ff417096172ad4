"""Smoke test of bench/ppo_vs_trl.py: one timed step of each trainer on the micro workspace."""

import importlib.util
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_bench():
    spec = importlib.util.spec_from_file_location("ppo_vs_trl", os.path.join(REPO, "bench", "ppo_vs_trl.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bench_prints_samples_per_second_and_ratios(micro_rm_ws, capsys):
    argv = ["--preset", "micro", "--workspace", str(micro_rm_ws.home), "--seed", str(micro_rm_ws.seed),
            "--steps", "1", "--batch", "4", "--generations", "2", "--max-new-tokens", "8", "--json"]
    assert load_bench().main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    for name in ("kit_ppo", "kit_rloo", "kit_grpo", "trl_rloo", "trl_grpo"):
        assert result[f"{name}_samples_per_second"] > 0
        assert len(result[f"{name}_step_seconds"]) == 1
        assert 1 <= result[f"{name}_response_tokens"] <= 8
        assert any(line.startswith(name) for line in out), f"no table row for {name}"
    for name in ("trl_rloo", "trl_grpo"):
        assert result[f"kit_over_{name}"] > 0 and result[f"kit_{name[4:]}_over_{name}"] > 0
    assert (result["batch"], result["generations"], result["max_new_tokens"]) == (4, 2, 8)
    for name in ("kit_ppo", "kit_rloo", "kit_grpo"):
        phases = result[f"{name}_phase_seconds"]
        assert set(phases) == {"rollout", "score", "logprobs", "update", "other"}
        assert all(v >= 0 for v in phases.values()) and phases["rollout"] > 0 and phases["update"] > 0
        assert sum(phases.values()) <= result[f"{name}_median_seconds_per_step"] * 1.5


def test_bench_rejects_a_batch_that_the_groups_do_not_divide(tmp_path, capsys):
    argv = ["--preset", "ci", "--workspace", str(tmp_path), "--batch", "6", "--generations", "4"]
    assert load_bench().main(argv) == 2
    assert "--batch=6 must be a positive multiple of --generations=4" in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "a bad flag must fail before anything is built"


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_playground_bench_splits_the_first_curves_seconds(micro_rm_ws, capsys):
    argv = ["--preset", "micro", "--workspace", str(micro_rm_ws.home), "--seed", str(micro_rm_ws.seed),
            "--repeats", "1", "--json"]
    assert load_script("playground").main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["first_curve_seconds"] > result["build_seconds"] > 0 and result["draw_seconds"] > 0
    assert result["step_and_rest_seconds"] > 0


def test_ratings_bench_checks_the_intervals_and_prints_the_ratio(capsys):
    """bench/ratings.py (lab 08's bootstrap against one refit per replicate; formerly a timed unit test)."""
    spec = importlib.util.spec_from_file_location("ratings_bench", os.path.join(REPO, "bench", "ratings.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--players", "4", "--games", "400", "--prompts", "32", "--boot", "20", "--repeats", "1",
                       "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["same_intervals"] is True and result["refit_each_over_kit"] > 0
    assert result["kit_median_seconds"] > 0 and result["boot"] == 20
