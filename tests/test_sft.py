import torch

from rlhf_kit.losses import sft_loss
from rlhf_kit.models import load_causal_lm
from rlhf_kit.sft import SFTConfig, collate, tokenize_demo, train_sft, train_sft_with_trl
from rlhf_kit.world import load_world


def test_response_mask_covers_exactly_the_response_and_eos(micro_ws):
    _, tok = load_causal_lm(micro_ws.path("base"))
    prompt, response = "### Instruction:\nWrite a positive review of a comedy about a dog.\n### Response:\n", \
        "A delight."
    ids, mask = tokenize_demo(tok, prompt, response, max_len=128)
    response_ids = [i for i, m in zip(ids, mask) if m]
    assert response_ids[-1] == tok.eos_token_id
    assert tok.decode(response_ids[:-1]) == response
    assert tok.decode([i for i, m in zip(ids, mask) if not m]) == prompt


def test_collate_right_pads():
    batch = collate([([5, 6, 7], [0, 1, 1]), ([8], [1])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["response_mask"].tolist() == [[0, 1, 1], [1, 0, 0]]


def test_train_sft_uses_the_given_loss_and_reduces_it(micro_ws):
    model, tok = load_causal_lm(micro_ws.path("base"))
    demos = load_world(micro_ws.path("world")).demos[:8]
    calls, losses = [], []

    def counting_loss(logits, input_ids, response_mask):
        calls.append(1)
        return sft_loss(logits, input_ids, response_mask)

    train_sft(model, tok, demos, SFTConfig(steps=25, batch_size=8, lr=3e-3), loss_fn=counting_loss,
              callback=lambda step, loss: losses.append(loss))
    assert len(calls) == 25
    assert losses[-1] < losses[0]


def test_sft_stage_reports_before_and_after(micro_ws):
    metrics = micro_ws.metrics("sft")
    for key in ("gold_before", "gold_after", "format_rate_before", "format_rate_after", "seconds"):
        assert isinstance(metrics[key], float)


def test_trl_sft_trainer_runs_on_cpu(micro_ws):
    demos = load_world(micro_ws.path("world")).demos[:8]
    model, tok, train_loss = train_sft_with_trl(micro_ws.path("base"), demos, SFTConfig(steps=2, batch_size=4))
    assert torch.isfinite(torch.tensor(train_loss))
    assert next(model.parameters()).device.type == "cpu"
