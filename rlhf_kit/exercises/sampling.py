"""Lab 00: one sampling step by hand, `next_token_distribution` (temperature and top-k) and `sample_next_token`
(greedy or one seeded draw), with their test vectors and mistake catalogues. References in `rlhf_kit.sampling`."""

from __future__ import annotations

import torch

from .. import sampling
from .checking import Case, Exercise, Mistake, must_reject, randn

# ---------------------------------------------------------------------------------------- next_token_distribution
# Worked example: logits [2, 1, 0, -1] at T = 0.5 are [4, 2, 0, -2]; the top 2 are 4 and 2, so
# p = [e^4, e^2, 0, 0] / (e^4 + e^2) = [1, e^-2, 0, 0] / (1 + e^-2) = [0.880797, 0.119203, 0, 0].
_WORKED = Case({"logits": torch.tensor([[2.0, 1.0, 0.0, -1.0]]), "temperature": 0.5, "top_k": 2},
               "worked example: logits [2, 1, 0, -1], temperature 0.5, top_k 2 -> [0.8808, 0.1192, 0, 0]",
               expected=torch.tensor([[0.880797, 0.119203, 0.0, 0.0]]))


def _random_case(batch, vocab, temperature, top_k, seed, what="") -> Case:
    g = torch.Generator().manual_seed(seed)
    return Case({"logits": randn(g, batch, vocab, scale=2.0), "temperature": temperature, "top_k": top_k},
                what or f"{batch} rows of {vocab} logits, temperature {temperature}, top_k {top_k}")


_DIST_CASES = [
    _WORKED,
    _random_case(3, 10, temperature=0.7, top_k=3, seed=0),
    _random_case(2, 12, temperature=1.5, top_k=None, seed=1, what="2 rows of 12 logits, temperature 1.5, "
                 "top_k None (keep every token)"),
    _random_case(4, 9, temperature=1.0, top_k=5, seed=2),
    _random_case(2, 8, temperature=2.0, top_k=1, seed=3, what="2 rows of 8 logits, temperature 2, top_k 1 "
                 "(only the most likely token is left: greedy, as a distribution)"),
    _random_case(2, 6, temperature=0.8, top_k=50, seed=4, what="2 rows of 6 logits, temperature 0.8, top_k 50, "
                 "more than the vocabulary: keep every token"),
]


def _keep(logits, top_k, largest=True, k_shift=0):
    """Boolean (batch, vocab): the top_k (or bottom_k) entries of each row, with k shifted by k_shift."""
    vocab = logits.shape[-1]
    k = vocab if top_k is None else min(max(top_k + k_shift, 0), vocab)
    keep = torch.zeros_like(logits, dtype=torch.bool)
    if k > 0:
        keep.scatter_(-1, logits.topk(k, dim=-1, largest=largest).indices, True)
    return keep


def _dist_model(*, scale=lambda z, t: z / t, largest=True, k_shift=0, fill=float("-inf"), after_softmax=False,
                dim=-1, use_top_k=True, log=False):
    """next_token_distribution with one ingredient changed, for the mistake catalogue."""
    def impl(logits, temperature=1.0, top_k=None):
        z = scale(logits.float(), temperature)
        keep = _keep(z, top_k if use_top_k else None, largest, k_shift)
        if after_softmax:
            return torch.softmax(z, dim=dim) * keep
        z = z.masked_fill(~keep, fill)
        return torch.log_softmax(z, dim=dim) if log else torch.softmax(z, dim=dim)
    return impl


def _same_as(model):
    """A detect rule: the learner's output equals `model`'s on the case, NaN where it has NaN (a softmax over the
    batch dimension gives NaN for a column of -inf, and NaN never equals NaN in the default comparison)."""
    def detect(case: Case, got) -> bool:
        expected = model(**case.kwargs)
        return (isinstance(got, torch.Tensor) and got.shape == expected.shape
                and bool(torch.allclose(expected.double(), got.detach().double(), atol=1e-5, equal_nan=True)))
    return detect


_DIST_MISTAKES = [
    Mistake("Temperature multiplies the logits in your version; it divides them: softmax(logits / T). With T < 1 "
            "the distribution must get sharper (closer to greedy), with T > 1 flatter.",
            _dist_model(scale=lambda z, t: z * t)),
    Mistake("The temperature was ignored: divide the logits by it before the softmax, softmax(logits / T).",
            _dist_model(scale=lambda z, t: z)),
    Mistake("You zeroed the tokens outside the top k after the softmax, so the row no longer sums to 1: either "
            "renormalise (divide by the row's sum) or, simpler, set the dropped logits to -inf before the softmax.",
            _dist_model(after_softmax=True)),
    Mistake("The dropped logits were set to 0, not -inf: exp(0) = 1, so they still get probability. Use "
            "float('-inf') (or masked_fill with -inf) before the softmax, so that exp gives exactly 0.",
            _dist_model(fill=0.0)),
    Mistake("You kept the k smallest logits: top-k keeps the k largest, the most likely tokens "
            "(logits.topk(k).values are the largest; topk(k, largest=False) the smallest).",
            _dist_model(largest=False)),
    Mistake("Off by one in k: your version keeps one token too many. Keep exactly top_k tokens: the ones whose "
            "logit is at least the k-th largest, logits.topk(top_k).values[..., -1:] (index -1, not top_k).",
            _dist_model(k_shift=1)),
    Mistake("Off by one in k: your version keeps one token too few. Keep exactly top_k tokens: the ones whose "
            "logit is at least the k-th largest, logits.topk(top_k).values[..., -1:], compared with >=, not >.",
            _dist_model(k_shift=-1)),
    Mistake("top_k was ignored: keep only the top_k largest logits (set the others to -inf) before the softmax.",
            _dist_model(use_top_k=False)),
    Mistake("The softmax ran over the wrong dimension: each row (one position's logits over the vocabulary) must "
            "sum to 1, so normalise over the last dimension, dim=-1.", detect=_same_as(_dist_model(dim=0))),
    Mistake("Those are log-probabilities (log_softmax): return probabilities, torch.softmax, which "
            "torch.multinomial can draw from.", _dist_model(log=True)),
]

_DIST_VALID = {"logits": torch.tensor([[1.0, 0.5, -0.5]]), "temperature": 1.0, "top_k": None}

NEXT_TOKEN_DISTRIBUTION = Exercise(
    reference=sampling.next_token_distribution,
    cases=_DIST_CASES,
    mistakes=_DIST_MISTAKES,
    properties=[
        must_reject({**_DIST_VALID, "temperature": 0.0}, "temperature = 0",
                    "dividing by 0 is undefined; greedy decoding is an argmax, not a distribution"),
        must_reject({**_DIST_VALID, "temperature": -1.0}, "temperature = -1",
                    "a negative temperature would turn the order of the logits upside down"),
        must_reject({**_DIST_VALID, "top_k": 0}, "top_k = 0", "top_k must be >= 1, or None to keep every token"),
    ],
)


# ---------------------------------------------------------------------------------------------- sample_next_token
def _sample_case(batch, vocab, temperature, top_k, seed, what="") -> Case:
    g = torch.Generator().manual_seed(seed)
    return Case({"logits": randn(g, batch, vocab, scale=2.0), "temperature": temperature, "top_k": top_k,
                 "generator": torch.Generator().manual_seed(1000 + seed)},
                what or f"{batch} rows of {vocab} logits, temperature {temperature}, top_k {top_k}, a seeded "
                        f"generator")


_SAMPLE_CASES = [
    _sample_case(64, 10, temperature=1.0, top_k=None, seed=0),
    _sample_case(64, 10, temperature=0.5, top_k=None, seed=1),
    _sample_case(64, 12, temperature=1.5, top_k=3, seed=2),
    _sample_case(8, 10, temperature=0.0, top_k=None, seed=3, what="8 rows of 10 logits, temperature 0: greedy, "
                 "the argmax of each row, no draw"),
]


def _draw(logits, temperature, top_k, generator):
    return torch.multinomial(sampling.next_token_distribution(logits, temperature, top_k), 1,
                             generator=generator).squeeze(-1)


def _greedy_or(draw):
    return lambda logits, temperature, top_k, generator: (
        logits.argmax(-1) if temperature == 0 else draw(logits, temperature, top_k, generator))


def _possible_draw_not_the_generators(case: Case, got) -> bool:
    """Every token is one the distribution could give (probability > 0), but they are not the generator's."""
    kwargs = case.kwargs
    if kwargs["temperature"] == 0 or not isinstance(got, torch.Tensor) or got.shape != kwargs["logits"].shape[:1]:
        return False
    if got.is_floating_point() or (got < 0).any() or (got >= kwargs["logits"].shape[-1]).any():
        return False
    probs = sampling.next_token_distribution(kwargs["logits"], kwargs["temperature"], kwargs["top_k"])
    return bool((probs.gather(-1, got.long()[:, None]) > 0).all())


_SAMPLE_MISTAKES = [
    Mistake("You returned the most likely token (argmax): that is greedy decoding, right only for temperature 0. "
            "For temperature > 0, draw one token from the distribution: torch.multinomial(probs, 1, "
            "generator=generator).", _greedy_or(lambda logits, temperature, top_k, generator: logits.argmax(-1))),
    Mistake("The temperature was ignored: draw from next_token_distribution(logits, temperature, top_k), not from "
            "softmax(logits).",
            _greedy_or(lambda logits, temperature, top_k, generator: _draw(logits, 1.0, top_k, generator))),
    Mistake("top_k was ignored: pass it on to next_token_distribution, so that tokens outside the k most likely "
            "can never be drawn.",
            _greedy_or(lambda logits, temperature, top_k, generator: _draw(logits, temperature, None, generator))),
    Mistake("Return one token id per row, shape (batch,): torch.multinomial(probs, 1) has shape (batch, 1), so "
            "take .squeeze(-1).",
            _greedy_or(lambda logits, temperature, top_k, generator: _draw(logits, temperature, top_k,
                                                                           generator)[:, None])),
    Mistake("Those tokens are possible draws, but not the ones the seeded generator gives: call torch.multinomial "
            "on the probabilities with num_samples=1 and generator=generator, so that the same seed always gives the "
            "same tokens (not torch.distributions, not the global random state, not a Gumbel or other trick of "
            "your own).", detect=_possible_draw_not_the_generators),
]

SAMPLE_NEXT_TOKEN = Exercise(
    reference=sampling.sample_next_token,
    cases=_SAMPLE_CASES,
    mistakes=_SAMPLE_MISTAKES,
)
