"""rlhf_kit.reuse: the test suite's labs/ pass gets the solutions/ pass's results back, and nobody else does."""

import shutil

import pytest
import torch

from rlhf_kit import losses, reuse
from rlhf_kit.workspace import Workspace

CALLS: list[tuple] = []


@reuse.reusable
def measured(ws, beta, loss_fn=None, **overrides):
    CALLS.append((beta, loss_fn, overrides))
    return {"beta": beta, "value": torch.rand(()).item(), "overrides": overrides}


def mine(*args):                           # a learner's function, in place of the reference it falls back to
    return losses.dpo_loss(*args)


@pytest.fixture
def ws(micro_ws, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(micro_ws.root, home / micro_ws.root.name)
    CALLS.clear()
    return Workspace(micro_ws.preset, home=home, seed=micro_ws.seed)


def test_without_the_variable_every_call_runs(ws, monkeypatch):
    monkeypatch.delenv(reuse.REUSE_VAR, raising=False)
    measured(ws, 0.1)
    measured(ws, 0.1)
    assert len(CALLS) == 2 and not (ws.root / reuse.FOLDER).exists()


def test_the_labs_pass_gets_what_the_solutions_pass_kept(ws, monkeypatch, capsys):
    monkeypatch.setenv(reuse.REUSE_VAR, reuse.RECORD)
    kept = measured(ws, 0.1, loss_fn=mine, lr=1e-3)                     # solutions/: the learner's function
    monkeypatch.setenv(reuse.REUSE_VAR, "1")
    again = measured(ws, 0.1, loss_fn=losses.dpo_loss, lr=1e-3)         # labs/: the stub fell back to the reference
    assert again == kept and len(CALLS) == 1
    assert "measured: reusing the result the solutions/ notebooks computed" in capsys.readouterr().out
    measured(ws, 0.3, loss_fn=losses.dpo_loss, lr=1e-3)                # other settings: run
    measured(ws, 0.1, loss_fn=losses.dpo_loss, lr=2e-3)
    assert [call[0] for call in CALLS] == [0.1, 0.3, 0.1]


def test_a_rebuilt_stage_is_never_served_an_old_result(ws, monkeypatch):
    monkeypatch.setenv(reuse.REUSE_VAR, reuse.RECORD)
    measured(ws, 0.1)
    done = ws.path("sft") / "DONE.json"
    done.write_text(done.read_text().replace('"stage"', '"rebuilt": true, "stage"', 1))
    monkeypatch.setenv(reuse.REUSE_VAR, "1")
    measured(ws, 0.1)
    assert len(CALLS) == 2


def test_a_trained_model_comes_back_as_it_was(ws, tmp_path):
    from rlhf_kit.models import load_causal_lm

    model, tokenizer = load_causal_lm(ws.path("sft"))
    reuse.save_trained((model, tokenizer, 1.25), tmp_path / "kept")
    again, again_tokenizer, loss = reuse.load_trained_lm(tmp_path / "kept")
    ids = torch.tensor([tokenizer.encode("a review")])
    assert loss == 1.25 and again_tokenizer.encode("a review") == ids[0].tolist()
    assert not again.training and torch.equal(again(ids).logits, model.eval()(ids).logits)


def test_a_trained_reward_model_comes_back_as_it_was(micro_rm_ws, tmp_path):
    from rlhf_kit.reward import RewardScorer

    scorer = RewardScorer(micro_rm_ws.path("reward"))
    reuse.save_trained((scorer.model, scorer.tokenizer, 0.5), tmp_path / "kept")
    model, tokenizer, loss = reuse.load_trained_reward_model(tmp_path / "kept")
    ids = torch.tensor([tokenizer.encode("a review")])
    assert loss == 0.5 and not model.training
    assert torch.equal(model(ids).logits, scorer.model(ids).logits)
