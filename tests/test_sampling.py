"""The kit's sampler (`rlhf_kit.sampling.sample`): the tokens of the `generate`-based sampler it replaced, a
prompt's sample independent of its batch, the GPT-2 decoding step equal to the model's forward, and draws from
softmax(logits / T)."""

import importlib.util
import os

import pytest
import torch

from rlhf_kit import sampling
from rlhf_kit.models import load_causal_lm
from rlhf_kit.sampling import generate, row_seeds, sample

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = ["This", "A", "### Instruction:\nWrite a negative review of a horror about a ghost.\n### Response:\n",
           "### Instruction:\nWrite a positive review of a comedy about a dog.\n### Response:\n", "The film"] * 4


def load_bench():
    spec = importlib.util.spec_from_file_location("sampler_bench", os.path.join(REPO, "bench", "sampler.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sft(micro_ws):
    return load_causal_lm(micro_ws.path("sft"))


@pytest.fixture(params=["gpt2_step", "model_forward"])
def decoder(request, monkeypatch):
    """Both decoding steps: the written-out GPT-2 step, and the model's own forward (any other model)."""
    if request.param == "model_forward":
        monkeypatch.setattr(sampling._GPT2Decoder, "fits", staticmethod(lambda model: False))
    return request.param


@pytest.mark.parametrize("max_new_tokens", [1, 7, 40])
def test_sample_draws_the_tokens_of_the_generate_based_sampler_it_replaced(sft, decoder, max_new_tokens):
    model, tok = sft
    seeds = row_seeds(3, 5, 0, len(PROMPTS))
    before = load_bench().generate_before(model, tok, PROMPTS, seeds, 0.9, max_new_tokens)
    rollout = sample(model, tok, PROMPTS, seeds, 0.9, max_new_tokens)
    assert torch.equal(rollout.response_ids, before)
    if max_new_tokens == 40:
        ended_early = rollout.has_eos & (rollout.mask.sum(1) < rollout.response_ids.shape[1])
        assert ended_early.any() and not ended_early.all(), "rows must end at different steps for this test"


def test_greedy_and_top_k_1_agree_on_both_decoders(sft, decoder):
    model, tok = sft
    greedy = sample(model, tok, PROMPTS, list(range(len(PROMPTS))), 0.0, 30)
    top_1 = sample(model, tok, PROMPTS, list(range(len(PROMPTS))), 1.0, 30, top_k=1)
    assert torch.equal(greedy.response_ids, top_1.response_ids)
    assert greedy.responses == generate(model, tok, PROMPTS, 30, temperature=0.0, batch_size=3)


def test_a_prompts_sample_does_not_depend_on_its_batch(sft):
    model, tok = sft
    seeds = row_seeds(0, 2, 0, len(PROMPTS))
    batched = sample(model, tok, PROMPTS, seeds, 1.0, 40).responses
    alone = [sample(model, tok, [p], [s], 1.0, 40).responses[0] for p, s in zip(PROMPTS, seeds)]
    assert batched == alone
    assert generate(model, tok, PROMPTS, 40, seed=1, batch_size=7) == generate(model, tok, PROMPTS, 40, seed=1)
    halves = (generate(model, tok, PROMPTS[:9], 40, seed=1)           # two processes, each with its rows' offset
              + generate(model, tok, PROMPTS[9:], 40, seed=1, first_row=9))
    assert halves == generate(model, tok, PROMPTS, 40, seed=1)


def test_the_gpt2_step_computes_the_models_logits(sft):
    """Three steps of the written-out GPT-2 step against the model's forward on the whole sequence; before the
    third, one row leaves the batch and the cache must follow."""
    model, tok = sft
    enc = tok(PROMPTS[:5], return_tensors="pt", padding=True, padding_side="left")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                    use_cache=True)
        step = sampling._GPT2Decoder(model, out.past_key_values, 3, mask)
        for token, keep in (([5, 9, 11, 2, 7], None), ([1, 1, 3, 8, 4], [0, 2, 3, 4]), ([4, 6, 4, 6], None)):
            token = torch.tensor(token)
            ids, mask = torch.cat([ids, token[:, None]], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            position = (mask.cumsum(1) - 1).clamp(min=0)
            full = model(input_ids=ids, attention_mask=mask, position_ids=position).logits[:, -1]
            assert torch.allclose(step(token, position[:, -1]), full, atol=1e-5)
            if keep is not None:
                step.keep(torch.tensor(keep))
                ids, mask = ids[keep], mask[keep]


def test_the_gpt2_step_is_not_used_for_a_model_with_adapters(sft):
    from rlhf_kit.lora import add_lora

    model, _ = sft
    assert sampling._GPT2Decoder.fits(model)
    assert not sampling._GPT2Decoder.fits(add_lora(load_causal_lm(os.fspath(model.name_or_path))[0], rank=2))


@pytest.mark.parametrize("temperature,top_k", [(1.0, None), (0.6, None), (1.5, 8)])
def test_sampled_tokens_follow_softmax_of_logits_over_temperature(sft, temperature, top_k):
    """2000 first tokens of one prompt, each from its own stream, against softmax(logits / T) over the top k:
    total variation distance within what 2000 draws allow (about 0.5 * sqrt(support / n) at most)."""
    model, tok = sft
    prompt, n = PROMPTS[2], 2000
    rollout = sample(model, tok, [prompt] * n, row_seeds(11, 0, 0, n), temperature, 1, top_k)
    counts = torch.bincount(rollout.response_ids[:, 0], minlength=len(tok)).float()
    with torch.no_grad():
        logits = model(**tok([prompt], return_tensors="pt")).logits[0, -1]
    expected = sampling.next_token_distribution(logits[None], temperature, top_k)[0]
    support = int((expected > 1e-3).sum())
    distance = 0.5 * (counts / n - expected[: len(counts)]).abs().sum()
    assert distance < 0.5 * (support / n) ** 0.5 + 0.01, (distance, support)
    if top_k is not None:
        assert int((counts > 0).sum()) <= top_k


def test_bench_prints_the_ratios_and_counts_the_same_tokens(micro_ws, capsys):
    import json

    argv = ["--preset", "micro", "--workspace", str(micro_ws.home), "--seed", str(micro_ws.seed),
            "--batch", "6", "--max-new-tokens", "12", "--repeats", "1", "--json"]
    assert load_bench().main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert result["kit_tokens"] == result["generate_before_tokens"] > 0
    assert result["same_tokens_as_generate_before"] is True
    for name in ("kit", "generate_before", "plain_loop"):
        assert result[f"{name}_tokens_per_second"] > 0
        assert any(line.startswith(name) for line in out), f"no table row for {name}"
    assert result["kit_over_generate_before"] > 0 and result["kit_over_plain_loop"] > 0


def test_a_cache_that_cannot_drop_rows_keeps_them_and_samples_the_same(sft, monkeypatch):
    """A model whose KV cache has no `batch_select_indices` (some cache types) decodes every row to the end."""
    model, tok = sft
    seeds = row_seeds(3, 5, 0, len(PROMPTS))
    expected = sample(model, tok, PROMPTS, seeds, 0.9, 40).response_ids
    monkeypatch.setattr(sampling._GPT2Decoder, "fits", staticmethod(lambda model: False))
    real_init = sampling._HFDecoder.__init__

    def without_row_dropping(self, *args):
        real_init(self, *args)
        self.can_keep = False
        self.keep = None                                      # would raise if called
    monkeypatch.setattr(sampling._HFDecoder, "__init__", without_row_dropping)
    assert torch.equal(sample(model, tok, PROMPTS, seeds, 0.9, 40).response_ids, expected)
