import json
import os
import subprocess
import sys

import pytest

from rlhf_kit.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "rlhf_kit.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, timeout=900)


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory):
    """One `micro` workspace for the command-line chain, built by the commands themselves, each in its own process;
    later commands reuse the stages earlier ones built. Micro (seconds), not ci: the suite's ci workspace is built
    once, by scripts/test.sh, and lab 01 asserts on it that SFT beats the base model; the chain here checks the
    commands and that another process builds the same stages."""
    return tmp_path_factory.mktemp("cli-home")


@pytest.mark.slow
def test_pretrain_then_sft_json(cli_home):
    """`rlhf-kit pretrain` then `rlhf-kit sft --json`: the stage's metrics as the last line. (In this order:
    pretraining after SFT would rebuild the base model and remove the SFT model built from the old one.)"""
    result = run_cli("pretrain", "--preset", "micro", "--workspace", str(cli_home), "--seed", "0", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["stage"] == "base"
    result = run_cli("sft", "--preset", "micro", "--workspace", str(cli_home), "--seed", "0", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert (metrics["stage"], metrics["preset"], metrics["seed"]) == ("sft", "micro", 0)
    for key in ("gold_before", "gold_after", "format_rate_before", "format_rate_after", "final_loss", "seconds"):
        assert isinstance(metrics[key], float), (key, metrics)
    assert 0 <= metrics["format_rate_after"] <= 1 and metrics["seconds"] > 0


def test_unknown_preset_from_environment_is_one_clear_error(tmp_path):
    result = run_cli("pretrain", "--workspace", str(tmp_path), env={"RLHF_KIT_PRESET": "huge"})
    assert result.returncode == 2
    assert "Unknown preset 'huge'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("flag, value, message", [
    ("--clip-eps", "1", "--clip-eps 1.0: PPOConfig.clip_eps must be between 0 and 1"),
    ("--beta", "inf", "--beta inf: PPOConfig.beta must be a finite number >= 0"),
    ("--lr", "inf", "--lr inf: PPOConfig.lr must be a finite number > 0"),
    ("--seed", "-1", "--seed must be a whole number from 0 to 4294967295; got -1."),
])
def test_ppo_values_that_cannot_work_are_one_line_before_anything_is_built(tmp_path, flag, value, message):
    result = run_cli("ppo", "--preset", "ci", "--workspace", str(tmp_path / "ws"), flag, value)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlhf-kit ppo: error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "ws").exists()                        # nothing was built, not even the folder


@pytest.mark.parametrize("how", ["--workspace", "RLHF_KIT_HOME"])
def test_a_workspace_home_that_is_a_file_is_one_line_naming_it(tmp_path, how):
    home = tmp_path / "home.txt"
    home.write_text("a file")
    args, env = (["--workspace", str(home)], {}) if how == "--workspace" else ([], {"RLHF_KIT_HOME": str(home)})
    result = run_cli("sft", "--preset", "ci", *args, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"rlhf-kit sft: error: The workspace home {home} is a file, not a "
                                          f"folder: set $RLHF_KIT_HOME (or --workspace) to a folder you can write in."]
    assert home.read_text() == "a file"


def test_an_unwritable_workspace_home_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    from rlhf_kit import workspace

    monkeypatch.setattr(workspace, "_writable", lambda folder: folder != tmp_path)     # root may write anywhere
    for command in (["sft"], ["course", "--labs", "00"]):
        assert main([*command, "--preset", "ci", "--workspace", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"workspace home {tmp_path} is not writable by this user" in err
    assert list(tmp_path.iterdir()) == []


def test_unknown_preset_argument_is_rejected():
    with pytest.raises(SystemExit):
        main(["sft", "--preset", "huge"])


def test_build_labs_check_passes_on_the_repository():
    result = run_cli("build-labs", "--check")
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_collect_then_reward_json(cli_home):
    """`rlhf-kit collect --simulated --pairs N` then `rlhf-kit reward --json`, after the test above."""
    result = run_cli("collect", "--simulated", "--pairs", "12", "--preset", "micro", "--workspace", str(cli_home),
                     "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["n_pairs"] == 12
    result = run_cli("reward", "--preset", "micro", "--workspace", str(cli_home), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("n_pairs", "heldout_accuracy", "gold_accuracy", "annotator_gold_agreement", "seconds"):
        assert key in metrics
    assert metrics["n_pairs"] == 12


def test_collect_without_simulated_says_how_to_label(tmp_path):
    result = run_cli("collect", "--preset", "ci", "--workspace", str(tmp_path))
    assert result.returncode == 2 and "--simulated" in result.stderr and "lab 02" in result.stderr


@pytest.mark.slow
def test_the_same_seed_gives_the_same_chain_in_another_process(cli_home, tmp_path):
    """Same preset and seed, same course: the chain that the commands above built, each in its own process, has the
    same metrics, timings aside, as the same stages built here, in this process. Preferences differ on purpose:
    `collect` above asked for 12 pairs."""
    from rlhf_kit.course import comparable, stage_metrics
    from rlhf_kit.workspace import Workspace

    here = Workspace("micro", home=tmp_path, seed=0)
    here.ensure("sft")
    strip = lambda root: comparable({"labs": [], "stages": stage_metrics(root)})["stages"]  # noqa: E731
    mine, theirs = strip(cli_home / "micro-seed0"), strip(here.root)
    assert set(mine) >= {"world", "base", "sft"}
    for stage in ("world", "base", "sft"):
        assert mine[stage] == theirs[stage], (stage, mine[stage], theirs[stage])
