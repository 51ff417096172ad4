"""Tokens per second of the kit's sampler beside the sampler it replaced and a plain KV-cached decoding loop.

    python bench/sampler.py --preset lab --batch 64 --max-new-tokens 64 [--repeats 5] [--json]

The three run in this one process, one after the other, on the same model, prompts, seeds, temperature and length:

- `kit`: `rlhf_kit.sampling.sample`, today's sampler: a KV-cached loop of its own, each row's uniforms drawn a block
  of tokens at a time from its own seeded stream, and finished rows leaving the batch;
- `generate_before`: the sampler it replaced (kept here, verbatim in what it computes, as the baseline):
  transformers' `generate` in greedy mode with a `LogitsProcessor` that makes one `torch.rand(vocab)` per row per
  token from the row's generator and adds Gumbel noise;
- `plain_loop`: the simplest KV-cached loop, one `torch.multinomial` for the whole batch per token (no per-row
  streams, so it gives none of the kit's guarantees), every row kept in the batch until the last one ends:
  the floor a sampler with no bookkeeping would cost.

The model is the workspace's SFT policy (the workspace is built up to `sft` if it is missing; about a minute in
`ci`, four in `lab`). tokens/s counts response tokens up to and including each row's eos, the same tokens for all
three (the kit and `generate_before` draw identical tokens: `tests/test_sampling.py` checks it, and the script
prints whether they did here). After one warm-up call each, the three are called in turn `--repeats` times (round
robin, so that a shared machine's drift reaches all three alike); s/call is the median. A ratio is the median over
rounds of the kit's tokens/s over the other's in the same round (above 1: the kit is faster).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from rlhf_kit.presets import PRESETS

SAMPLERS = ("kit", "generate_before", "plain_loop")


class _PerTokenStreams(LogitsProcessor):
    """The replaced sampler's processor: one torch.rand(vocab) per row per token, Gumbel-max on greedy decoding."""

    def __init__(self, seeds, temperature, device):
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.temperature = temperature

    def __call__(self, input_ids, scores):
        u = torch.stack([torch.rand(scores.shape[-1], generator=g, device=scores.device) for g in self.generators])
        return scores / self.temperature - torch.log(-torch.log(u.clamp(min=torch.finfo(u.dtype).tiny)))


@torch.no_grad()
def generate_before(model, tokenizer, prompts, seeds, temperature, max_new_tokens) -> torch.Tensor:
    """The response ids (b, R) the replaced sampler drew: `generate` + `_PerTokenStreams`."""
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    processors = LogitsProcessorList([_PerTokenStreams(seeds, temperature, model.device)])
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, logits_processor=processors,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return out[:, enc["input_ids"].shape[1]:]


@torch.no_grad()
def plain_loop(model, tokenizer, prompts, temperature, max_new_tokens) -> torch.Tensor:
    """The floor: a KV-cached loop with one multinomial draw per token for the whole batch."""
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    mask = enc["attention_mask"]
    position = (mask.cumsum(1) - 1).clamp(min=0)
    out = model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=position, use_cache=True)
    past, position = out.past_key_values, position[:, -1:]
    tokens, done = [], torch.zeros(len(prompts), dtype=torch.bool)
    for _ in range(max_new_tokens):
        probs = torch.softmax(out.logits[:, -1].float() / temperature, dim=-1)
        token = torch.multinomial(probs, 1).squeeze(1).masked_fill(done, tokenizer.pad_token_id)
        tokens.append(token)
        done |= token == tokenizer.eos_token_id
        if done.all():
            break
        mask = torch.cat([mask, mask.new_ones(len(prompts), 1)], dim=1)
        position = position + 1
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position, past_key_values=past,
                    use_cache=True)
        past = out.past_key_values
    return torch.stack(tokens, dim=1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=list(PRESETS), default="ci", help="model size (default: ci)")
    parser.add_argument("--batch", type=int, default=64, help="prompts per call (default: 64)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the preset's")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per sampler, after one warm-up call")
    parser.add_argument("--workspace", default=None, help="workspace home (default: $RLHF_KIT_HOME or ./workspace)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object on the last line")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or not args.temperature > 0:
        print("--batch and --repeats must be >= 1 and --temperature > 0", file=sys.stderr)
        return 2
    from rlhf_kit.models import load_causal_lm
    from rlhf_kit.sampling import first_eos_mask, row_seeds, sample
    from rlhf_kit.workspace import Workspace
    from rlhf_kit.world import load_world, training_prompts

    ws = Workspace(args.preset, home=args.workspace, seed=args.seed)
    model, tokenizer = load_causal_lm(ws.ensure("sft"))
    model.eval()
    pool = training_prompts(load_world(ws.require("world")))
    prompts = [pool[i % len(pool)] for i in range(args.batch)]
    max_new_tokens = args.max_new_tokens or ws.preset.max_new_tokens
    seeds = row_seeds(args.seed, 0, 0, args.batch)

    calls = {
        "kit": lambda: sample(model, tokenizer, prompts, seeds, args.temperature, max_new_tokens).response_ids,
        "generate_before": lambda: generate_before(model, tokenizer, prompts, seeds, args.temperature,
                                                   max_new_tokens),
        "plain_loop": lambda: plain_loop(model, tokenizer, prompts, args.temperature, max_new_tokens),
    }
    result = {"preset": args.preset, "batch": args.batch, "max_new_tokens": max_new_tokens,
              "threads": torch.get_num_threads(), "device": str(model.device)}
    kit_ids = calls["kit"]()
    result["same_tokens_as_generate_before"] = bool(torch.equal(kit_ids, calls["generate_before"]()))
    for call in calls.values():                                      # warm-up
        call()
    seconds, tokens = {name: [] for name in calls}, {name: [] for name in calls}
    for _ in range(args.repeats):               # round robin, so that a machine's drift reaches all three alike
        for name, call in calls.items():
            torch.manual_seed(args.seed)
            started = time.perf_counter()
            ids = call()
            seconds[name].append(time.perf_counter() - started)
            tokens[name].append(int(first_eos_mask(ids, tokenizer.eos_token_id)[0].sum()))
    for name in calls:
        median = statistics.median(seconds[name])
        result[f"{name}_seconds"] = round(median, 4)
        result[f"{name}_tokens"] = statistics.median(tokens[name])
        result[f"{name}_tokens_per_second"] = round(statistics.median(tokens[name]) / median, 1)
    for name in SAMPLERS[1:]:        # the median over rounds of the kit's speed over this one's in the same round
        result[f"kit_over_{name}"] = round(statistics.median(
            (t_kit / t) * (s / s_kit) for t_kit, t, s_kit, s in
            zip(tokens["kit"], tokens[name], seconds["kit"], seconds[name])), 3)

    print(f"preset {args.preset} on {result['device']}, {result['threads']} torch thread(s); {args.batch} prompts x "
          f"up to {max_new_tokens} tokens, temperature {args.temperature}; median of {args.repeats} calls\n")
    print(f"{'sampler':<16}{'s/call':>9}{'tokens':>9}{'tokens/s':>11}{'kit / this':>12}")
    for name in SAMPLERS:
        ratio = result.get(f"kit_over_{name}", 1.0)
        print(f"{name:<16}{result[f'{name}_seconds']:>9.3f}{result[f'{name}_tokens']:>9.0f}"
              f"{result[f'{name}_tokens_per_second']:>11.1f}{ratio:>12.3f}")
    print(f"\nkit and generate_before drew the same tokens: {result['same_tokens_as_generate_before']}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
