import logging
import re

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, ViTConfig

from rlhf_kit.models import check_tokenizer, load_causal_lm, tiny_gpt2, train_tokenizer
from rlhf_kit.pretrain import pretrain, token_stream
from rlhf_kit.sampling import generate, sample
from rlhf_kit.world import build_world

TEXTS = ["This comedy about a dog is a delight!", "A dull horror film about a robot.",
         "### Instruction:\nWrite a positive review of a drama about a chef.\n### Response:\n"] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=300)


def test_tokenizer_round_trips_and_has_distinct_pad_and_eos(tokenizer, tmp_path):
    assert tokenizer.pad_token_id is not None and tokenizer.eos_token_id is not None
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    text = "Unseen words survive byte-level BPE: Zürich, 42 ✓"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert again(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert again.pad_token == tokenizer.pad_token


def test_tiny_gpt2_saves_and_reloads_with_auto_classes(tokenizer, tmp_path, micro_preset):
    torch.manual_seed(0)
    model = tiny_gpt2(micro_preset, tokenizer).eval()
    assert model.config.resid_pdrop == model.config.attn_pdrop == model.config.embd_pdrop == 0.0
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True).eval()
    ids = torch.tensor([tokenizer(TEXTS[0])["input_ids"]])
    assert torch.allclose(model(ids).logits, again(ids).logits, atol=1e-6)
    loaded, loaded_tok = load_causal_lm(tmp_path)
    assert loaded.config.pad_token_id == loaded_tok.pad_token_id


def test_pretraining_lowers_the_loss(tokenizer, micro_preset):
    torch.manual_seed(0)
    model = tiny_gpt2(micro_preset, tokenizer)
    seen = []
    pretrain(model, tokenizer, build_world(0, 60, 10, 2).corpus, steps=40, batch_size=8, lr=3e-3, seq_len=64,
             callback=lambda step, loss: seen.append(loss))
    assert len(seen) == 40
    assert sum(seen[-5:]) / 5 < 0.7 * sum(seen[:5]) / 5


def test_token_stream_separates_documents_with_eos(tokenizer):
    stream = token_stream(tokenizer, ["a b", "c"])
    assert (stream == tokenizer.eos_token_id).sum() == 2 and stream[-1] == tokenizer.eos_token_id


def test_load_errors_name_the_problem(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="no config.json"):
        load_causal_lm(tmp_path / "nowhere")
    ViTConfig().save_pretrained(tmp_path / "vit")
    with pytest.raises(ValueError, match="not a causal language model"):
        load_causal_lm(tmp_path / "vit")


def test_tokenizer_without_pad_or_with_pad_equal_eos_is_rejected(tokenizer, tmp_path):
    no_pad = train_tokenizer(TEXTS, vocab_size=300)
    no_pad.pad_token = None
    with pytest.raises(ValueError, match="no pad token"):
        check_tokenizer(no_pad)
    same = train_tokenizer(TEXTS, vocab_size=300)
    same.pad_token = same.eos_token
    with pytest.raises(ValueError, match="pad token equals the eos token"):
        check_tokenizer(same)
    # and through the loader, from a saved directory
    GPT2Config(vocab_size=len(same), n_layer=1, n_embd=16, n_head=2).save_pretrained(tmp_path)
    same.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="pad token equals the eos token"):
        load_causal_lm(tmp_path)


def test_a_pad_id_outside_the_embedding_matrix_is_refused_with_the_fix(tmp_path):
    tok = train_tokenizer(TEXTS, vocab_size=300)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_layer=1, n_embd=16, n_head=2, n_positions=32))
    rows = len(tok)
    tok.add_special_tokens({"pad_token": "<|newpad|>"})   # a new pad token, the embeddings not resized
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    message = (f"the pad token '<|newpad|>' has id {rows}, but the model's embedding matrix has only {rows} rows "
               f"(ids 0 to {rows - 1})")
    with pytest.raises(ValueError, match=re.escape(message) + ".*" + re.escape(
            "run `model.resize_token_embeddings(len(tokenizer))` and save both again")):
        load_causal_lm(tmp_path, device="cpu")
    with pytest.raises(ValueError, match="embedding matrix has only"):
        check_tokenizer(tok, model=model)
    model.resize_token_embeddings(len(tok))   # the fix the message names
    model.save_pretrained(tmp_path)
    loaded, loaded_tok = load_causal_lm(tmp_path, device="cpu")
    assert loaded_tok.pad_token_id == rows and loaded.config.pad_token_id == rows
    assert loaded(torch.tensor([[loaded_tok.pad_token_id]])).logits.shape == (1, 1, rows + 1)


def test_batched_left_padded_generation_matches_one_at_a_time(micro_ws):
    model, tok = load_causal_lm(micro_ws.path("base"))
    prompts = ["This", "### Instruction:\nWrite a negative review of a horror about a ghost.\n### Response:\n",
               "A charming musical"]
    batched = generate(model, tok, prompts, max_new_tokens=12, temperature=0)
    single = [generate(model, tok, [p], max_new_tokens=12, temperature=0)[0] for p in prompts]
    assert batched == single
    assert tok.padding_side == "right"  # restored after generation


def test_generate_rejects_no_prompts(micro_ws):
    model, tok = load_causal_lm(micro_ws.path("base"))
    with pytest.raises(ValueError, match="empty list of prompts"):
        generate(model, tok, [], max_new_tokens=4)


def test_sampling_raises_no_false_padding_alarm_and_masks_the_padding(micro_ws):
    """transformers warns "We strongly recommend passing in an `attention_mask`" when a model sees a pad id
    without a mask (its `generate` did so in a decoding step after a row had ended, and labs 00, 01, 03 and 05
    printed it in red); the kit's sampler passes the mask at every step. Both halves are checked: no such
    message, and a left-padded batch's logits equal each prompt's alone."""
    model, tok = load_causal_lm(micro_ws.path("base"))
    prompts = ["This", "A", "### Instruction:\nWrite a negative review of a horror about a ghost.\n### Response:\n"] * 4
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("transformers").addHandler(handler)
    logging.Logger.warning_once.cache_clear()          # a warning shown once earlier in the session shows again
    try:
        rollout = sample(model, tok, prompts, list(range(len(prompts))), 1.0, 48)
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    finished_early = rollout.has_eos & (rollout.mask.sum(1) < rollout.response_ids.shape[1])
    assert finished_early.any(), "no row ended early, so this test would not see the alarm"
    assert not [r for r in records if "attention_mask" in r.getMessage()]

    def first_logits(batch):
        enc = tok(batch, return_tensors="pt", padding=True, padding_side="left")
        out = model.generate(**enc, max_new_tokens=4, do_sample=False, output_scores=True,
                             return_dict_in_generate=True, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)
        return torch.stack(out.scores)[:, 0]
    assert torch.allclose(first_logits(prompts[:1]), first_logits([prompts[0], prompts[2]]), atol=1e-4)
