"""Exercise checkers: run a learner's function on test vectors, compare with the reference, name the mistake.

    ok, message = verify("sft_loss", my_sft_loss)      # quiet: for tests and tools
    sft_loss = check("sft_loss", my_sft_loss)          # notebook-facing: prints the verdict, returns a function

`check` returns the learner's function when it passes and the reference implementation otherwise, saying so,
so the rest of the lab still runs. When the answer is wrong the message names the likely mistake: each
exercise carries a catalogue of typical wrong implementations, and the learner's output is matched against
them on the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from . import losses


@dataclass
class Mistake:
    hint: str                       # what the learner is told
    impl: Callable                  # a model of the wrong implementation, same signature as the reference


@dataclass
class Exercise:
    reference: Callable
    cases: list[Callable[[], dict]]  # each returns keyword arguments for one test vector, with "_what" describing it
    mistakes: list[Mistake] = field(default_factory=list)
    scalar: bool = False             # the output must be a 0-dim tensor
    atol: float = 1e-5


def _close(a, b, atol: float) -> bool:
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(_close(x, y, atol) for x, y in zip(a, b))
    if not isinstance(b, torch.Tensor) or a.shape != b.shape:
        return False
    return bool(torch.allclose(a.double(), b.detach().double(), atol=atol, rtol=1e-4, equal_nan=False))


def _clone(kwargs: dict) -> dict:
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items() if k != "_what"}


# ------------------------------------------------------------------------------------------------ sft_loss
def _sft_case(batch, seq_len, vocab, prompt_lens, response_lens, seed):
    def make() -> dict:
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(batch, seq_len, vocab, generator=g) * 2.0
        input_ids = torch.randint(0, vocab, (batch, seq_len), generator=g)
        mask = torch.zeros(batch, seq_len, dtype=torch.long)
        for row, (p, r) in enumerate(zip(prompt_lens, response_lens)):
            mask[row, p : p + r] = 1
            input_ids[row, p + r:] = vocab - 1          # padding
        return {"logits": logits, "input_ids": input_ids, "response_mask": mask,
                "_what": f"batch={batch}, prompt lengths {prompt_lens}, response lengths {response_lens}"}
    return make


def _sft_token_nll(logits, input_ids):
    logprobs = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return -logprobs


_SFT_MISTAKES = [
    Mistake(
        "Did you shift? The logits at position t-1 predict token t: compare logits[:, :-1] with "
        "input_ids[:, 1:] (and use response_mask[:, 1:]).",
        lambda logits, input_ids, response_mask: (
            -(torch.log_softmax(logits.float(), -1).gather(-1, input_ids[..., None]).squeeze(-1)
              * response_mask).sum() / response_mask.sum()),
    ),
    Mistake(
        "The loss includes prompt and padding tokens: multiply the token losses by the response mask, so only "
        "the response (and its eos) is learned.",
        lambda logits, input_ids, response_mask: _sft_token_nll(logits, input_ids).mean(),
    ),
    Mistake(
        "The mask is not shifted with the targets: the targets are input_ids[:, 1:], so the mask that says which "
        "targets are response tokens is response_mask[:, 1:], not response_mask[:, :-1].",
        lambda logits, input_ids, response_mask: (
            (_sft_token_nll(logits, input_ids) * response_mask[:, :-1]).sum() / response_mask[:, :-1].sum()),
    ),
    Mistake(
        "You summed the masked token losses: divide by the number of response tokens (mask.sum()) to get the mean.",
        lambda logits, input_ids, response_mask: (_sft_token_nll(logits, input_ids) * response_mask[:, 1:]).sum(),
    ),
    Mistake(
        "You divided by every position instead of by the number of response tokens: use mask.sum() as the "
        "denominator, not mask.numel().",
        lambda logits, input_ids, response_mask: (
            (_sft_token_nll(logits, input_ids) * response_mask[:, 1:]).sum() / response_mask[:, 1:].numel()),
    ),
    Mistake(
        "You averaged within each sequence and then over the batch. This lab's convention is one mean over all "
        "response tokens in the batch: (nll * mask).sum() / mask.sum().",
        lambda logits, input_ids, response_mask: (
            ((_sft_token_nll(logits, input_ids) * response_mask[:, 1:]).sum(1)
             / response_mask[:, 1:].sum(1)).mean()),
    ),
    Mistake(
        "Wrong sign: the loss is the negative log-likelihood. Minimising +log p would push the right tokens down.",
        lambda logits, input_ids, response_mask: -losses.sft_loss(logits, input_ids, response_mask),
    ),
]


EXERCISES: dict[str, Exercise] = {
    "sft_loss": Exercise(
        reference=losses.sft_loss,
        cases=[
            _sft_case(3, 9, 11, prompt_lens=[2, 4, 3], response_lens=[5, 2, 6], seed=0),
            _sft_case(2, 6, 7, prompt_lens=[1, 3], response_lens=[5, 3], seed=1),
            _sft_case(4, 12, 13, prompt_lens=[5, 2, 7, 3], response_lens=[4, 9, 1, 6], seed=2),
        ],
        mistakes=_SFT_MISTAKES,
        scalar=True,
    ),
}


def reference(name: str) -> Callable:
    return _exercise(name).reference


def _exercise(name: str) -> Exercise:
    if name not in EXERCISES:
        raise KeyError(f"No exercise called {name!r}. Known exercises: {', '.join(EXERCISES)}.")
    return EXERCISES[name]


def verify(name: str, fn: Callable) -> tuple[bool, str]:
    """Check `fn` against the reference of exercise `name` on every test vector. Prints nothing.

    Returns (True, summary) when every case matches, else (False, message naming the likely mistake).
    """
    exercise = _exercise(name)
    for number, make_case in enumerate(exercise.cases, start=1):
        case = make_case()
        where = f"test case {number} ({case['_what']})"
        try:
            got = fn(**_clone(case))
        except NotImplementedError:
            return False, f"{name} is not implemented yet."
        except Exception as error:  # the learner's code may fail in any way; report it, do not crash the lab
            return False, f"{name} raised {type(error).__name__}: {error} on {where}."
        expected = exercise.reference(**_clone(case))
        if not isinstance(got, (torch.Tensor, tuple, list)):
            return False, f"{name} should return a torch tensor; it returned {type(got).__name__} on {where}."
        if exercise.scalar and isinstance(got, torch.Tensor) and got.dim() != 0:
            return False, (f"{name} should return a single number (a 0-dim tensor); yours has shape "
                           f"{tuple(got.shape)} on {where}. Did you forget to reduce with .sum() / .mean()?")
        if _close(expected, got, exercise.atol):
            continue
        for mistake in exercise.mistakes:
            if _close(mistake.impl(**_clone(case)), got, exercise.atol):
                return False, f"{name} is wrong on {where}. {mistake.hint}"
        return False, f"{name} is wrong on {where}: expected {_show(expected)}, got {_show(got)}."
    return True, f"{name} passed all {len(exercise.cases)} checks."


def _show(value) -> str:
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        return f"{value.item():.6f}"
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return repr(value)


def check(name: str, fn: Callable) -> Callable:
    """Notebook-facing: print the verdict; return `fn` if it passes, else the reference (and say so)."""
    ok, message = verify(name, fn)
    if ok:
        print(f"✅ {message}")
        return fn
    print(f"❌ {message}")
    print(f"   Using the reference implementation of {name} for the rest of this lab, so everything below "
          f"still runs. Fix your function and re-run this cell to use your own.")
    return _exercise(name).reference
