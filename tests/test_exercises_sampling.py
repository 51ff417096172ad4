"""Lab 00's checkers, `next_token_distribution` and `sample_next_token`: each accepts the reference and an
independently written correct version, and names typical mistakes; plus the kit sampler's top_k.

As in test_exercises.py, the wrong implementations are written independently of the checker's catalogue, the way a
learner would write them, so a test fails if the test vectors stop telling a mistake apart.
"""


import pytest
import torch
from exercise_contract import contract

from rlhf_kit import sampling
from rlhf_kit.exercises import check, verify
from rlhf_kit.exercises.checking import randn

NAMES = ["next_token_distribution", "sample_next_token"]


# ------------------------------------------------------------------------------------------------ correct versions
def dist_renormalised(logits, temperature=1.0, top_k=None):
    """Softmax first, then zero all but the k most likely, then renormalise: the same distribution."""
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    if top_k is not None and top_k <= 0:
        raise ValueError("top_k must be positive")
    probs = torch.softmax(logits / temperature, dim=1)
    if top_k is not None:
        k = min(top_k, probs.shape[1])
        threshold = probs.sort(dim=1, descending=True).values[:, k - 1 : k]
        probs = torch.where(probs >= threshold, probs, torch.zeros_like(probs))
        probs = probs / probs.sum(dim=1, keepdim=True)
    return probs


def dist_loop(logits, temperature=1.0, top_k=None):
    """Row by row, with exp and a Python list of kept indices."""
    if not temperature > 0 or (top_k is not None and top_k < 1):
        raise ValueError("bad argument")
    rows = []
    for row in logits:
        z = row / temperature
        kept = sorted(range(len(z)), key=lambda i: -float(z[i]))[: top_k or len(z)]
        weights = torch.zeros_like(z)
        weights[kept] = (z[kept] - z[kept].max()).exp()
        rows.append(weights / weights.sum())
    return torch.stack(rows)


def sample_with_unnormalised_weights(logits, temperature, top_k, generator):
    """multinomial normalises its weights itself: exp of the kept logits / T, unnormalised, draws the same tokens."""
    if temperature == 0:
        return torch.argmax(logits, dim=1)
    z = logits / temperature
    if top_k is not None and top_k < z.shape[1]:
        z = torch.where(z >= z.topk(top_k, dim=1).values[:, -1:], z, torch.full_like(z, -float("inf")))
    weights = (z - z.max(dim=1, keepdim=True).values).exp()
    return torch.multinomial(weights, 1, generator=generator)[:, 0]


# ------------------------------------------------------------------------------------------------ learners' mistakes
def _top_k_mask(z, k, largest=True):
    keep = torch.zeros_like(z, dtype=torch.bool)
    return keep.scatter(1, z.topk(k, dim=1, largest=largest).indices, True)


def _guard(temperature, top_k):
    if temperature <= 0 or (top_k is not None and top_k < 1):
        raise ValueError("bad argument")


def dist_times_t(logits, temperature=1.0, top_k=None):
    _guard(temperature, top_k)
    z = logits * temperature
    if top_k is not None:
        z = z.masked_fill(~_top_k_mask(z, min(top_k, z.shape[1])), -1e9)
    return z.softmax(-1)


def dist_no_temperature(logits, temperature=1.0, top_k=None):
    _guard(temperature, top_k)
    z = logits.clone()
    if top_k is not None:
        z[~_top_k_mask(z, min(top_k, z.shape[1]))] = float("-inf")
    return torch.softmax(z, -1)


def dist_mask_after_softmax(logits, temperature=1.0, top_k=None):
    _guard(temperature, top_k)
    probs = torch.softmax(logits / temperature, -1)
    if top_k is not None:
        probs = probs * _top_k_mask(probs, min(top_k, probs.shape[1]))
    return probs


def dist_zero_fill(logits, temperature=1.0, top_k=None):
    _guard(temperature, top_k)
    z = logits / temperature
    if top_k is not None:
        z = z * _top_k_mask(z, min(top_k, z.shape[1]))
    return torch.softmax(z, -1)


def dist_smallest(logits, temperature=1.0, top_k=None):
    _guard(temperature, top_k)
    z = logits / temperature
    if top_k is not None:
        z = z.masked_fill(~_top_k_mask(z, min(top_k, z.shape[1]), largest=False), float("-inf"))
    return torch.softmax(z, -1)


def dist_k_plus_one(logits, temperature=1.0, top_k=None):
    """The k-th largest taken at index k instead of k - 1 (it keeps k + 1 tokens)."""
    _guard(temperature, top_k)
    z = logits / temperature
    if top_k is not None and top_k < z.shape[1]:
        kth = z.sort(-1, descending=True).values[:, top_k : top_k + 1]
        z = torch.where(z >= kth, z, torch.tensor(float("-inf")))
    return torch.softmax(z, -1)


def dist_strictly_greater(logits, temperature=1.0, top_k=None):
    """`>` instead of `>=` against the k-th largest: keeps k - 1 tokens."""
    _guard(temperature, top_k)
    z = logits / temperature
    if top_k is not None and top_k < z.shape[1]:
        kth = z.topk(top_k, -1).values[:, -1:]
        z = torch.where(z > kth, z, torch.tensor(float("-inf")))
    return torch.softmax(z, -1)


def dist_no_top_k(logits, temperature=1.0, top_k=None):
    _guard(temperature, top_k)
    return torch.softmax(logits / temperature, -1)


def dist_softmax_dim0(logits, temperature=1.0, top_k=None):
    _guard(temperature, top_k)
    z = logits / temperature
    if top_k is not None:
        z = z.masked_fill(~_top_k_mask(z, min(top_k, z.shape[1])), float("-inf"))
    return torch.softmax(z, 0)


def dist_log_probs(logits, temperature=1.0, top_k=None):
    _guard(temperature, top_k)
    z = logits / temperature
    if top_k is not None:
        z = z.masked_fill(~_top_k_mask(z, min(top_k, z.shape[1])), float("-inf"))
    return torch.log_softmax(z, -1)


def sample_argmax(logits, temperature, top_k, generator):
    return logits.argmax(-1)


def sample_no_temperature(logits, temperature, top_k, generator):
    if temperature == 0:
        return logits.argmax(-1)
    return torch.multinomial(sampling.next_token_distribution(logits, 1.0, top_k), 1, generator=generator).view(-1)


def sample_no_top_k(logits, temperature, top_k, generator):
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, -1)
    return torch.multinomial(probs, 1, generator=generator).view(-1)


def sample_keeps_dim(logits, temperature, top_k, generator):
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    return torch.multinomial(sampling.next_token_distribution(logits, temperature, top_k), 1, generator=generator)


def sample_global_rng(logits, temperature, top_k, generator):
    if temperature == 0:
        return logits.argmax(-1)
    torch.manual_seed(12345)
    return torch.multinomial(sampling.next_token_distribution(logits, temperature, top_k), 1).view(-1)


def sample_categorical(logits, temperature, top_k, generator):
    if temperature == 0:
        return logits.argmax(-1)
    torch.manual_seed(54321)
    return torch.distributions.Categorical(probs=sampling.next_token_distribution(logits, temperature, top_k)).sample()


WRONG = [
    ("next_token_distribution", dist_times_t, "Temperature multiplies the logits"),
    ("next_token_distribution", dist_no_temperature, "The temperature was ignored"),
    ("next_token_distribution", dist_mask_after_softmax, "no longer sums to 1"),
    ("next_token_distribution", dist_zero_fill, "set to 0, not -inf"),
    ("next_token_distribution", dist_smallest, "You kept the k smallest"),
    ("next_token_distribution", dist_k_plus_one, "one token too many"),
    ("next_token_distribution", dist_strictly_greater, "one token too few"),
    ("next_token_distribution", dist_no_top_k, "top_k was ignored"),
    ("next_token_distribution", dist_softmax_dim0, "wrong dimension"),
    ("next_token_distribution", dist_log_probs, "log-probabilities"),
    ("sample_next_token", sample_argmax, "greedy decoding"),
    ("sample_next_token", sample_no_temperature, "The temperature was ignored"),
    ("sample_next_token", sample_no_top_k, "top_k was ignored"),
    ("sample_next_token", sample_keeps_dim, "shape (batch,)"),
    ("sample_next_token", sample_global_rng, "not the ones the seeded generator gives"),
    ("sample_next_token", sample_categorical, "not the ones the seeded generator gives"),
]


# ------------------------------------------------------------------------------------------------ the tests
@pytest.mark.parametrize("fn", [dist_renormalised, dist_loop])
def test_independent_correct_distributions_pass(fn):
    ok, message = verify("next_token_distribution", fn)
    assert ok, message


def test_independent_correct_sampler_passes():
    ok, message = verify("sample_next_token", sample_with_unnormalised_weights)
    assert ok, message


def test_a_row_by_row_sampler_draws_the_same_tokens_and_passes():
    def rows(logits, temperature, top_k, generator):
        if temperature == 0:
            return torch.tensor([int(row.argmax()) for row in logits])
        probs = sampling.next_token_distribution(logits, temperature, top_k)
        return torch.cat([torch.multinomial(row, 1, generator=generator) for row in probs])

    ok, message = verify("sample_next_token", rows)
    assert ok, message


def test_re_seeding_the_callers_generator_is_named():
    def reseeds(logits, temperature, top_k, generator):
        generator.manual_seed(0)
        return sampling.sample_next_token(logits, temperature, top_k, generator)

    ok, message = verify("sample_next_token", reseeds)
    assert not ok and "changed its input `generator` in place" in message and "without re-seeding it" in message


def test_a_sampler_built_on_a_correct_distribution_passes():
    """The notebook's order: sample_next_token calls the learner's own (checked) next_token_distribution."""
    def mine(logits, temperature, top_k, generator):
        if temperature == 0:
            return logits.argmax(dim=-1)
        return torch.multinomial(dist_renormalised(logits, temperature, top_k), 1, generator=generator).squeeze(1)

    ok, message = verify("sample_next_token", mine)
    assert ok, message


@pytest.mark.parametrize("bad, phrase", [({"temperature": 0.0}, "temperature = 0"),
                                         ({"temperature": -1.0}, "temperature = -1"),
                                         ({"top_k": 0}, "top_k = 0")])
def test_bad_arguments_must_be_rejected(bad, phrase):
    def accepts_anything(logits, temperature=1.0, top_k=None):
        safe_t = temperature if temperature > 0 else 1.0
        return sampling.next_token_distribution(logits, safe_t, top_k if top_k else None)

    def rejects_all_but(skip):
        def fn(logits, temperature=1.0, top_k=None):
            checks = {"temperature = 0": temperature == 0, "temperature = -1": temperature < 0,
                      "top_k = 0": top_k == 0}
            if any(hit for key, hit in checks.items() if key != skip):
                raise ValueError("rejected")
            return accepts_anything(logits, temperature, top_k)
        return fn

    ok, message = verify("next_token_distribution", accepts_anything)
    assert not ok and "does not reject temperature = 0" in message
    ok, message = verify("next_token_distribution", rejects_all_but(phrase))
    assert not ok and f"does not reject {phrase}" in message, message
    with pytest.raises(ValueError, match="greedy" if "temperature" in phrase else "None to keep every token"):
        sampling.next_token_distribution(torch.zeros(1, 3), **{"temperature": 1.0, **bad})


def test_worked_example_and_clamped_top_k():
    torch.testing.assert_close(sampling.next_token_distribution(torch.tensor([[2.0, 1.0, 0.0, -1.0]]), 0.5, 2),
                               torch.tensor([[0.880797, 0.119203, 0.0, 0.0]]), atol=1e-6, rtol=0)
    logits = randn(torch.Generator().manual_seed(0), 3, 7)
    everything = sampling.next_token_distribution(logits, 0.9)
    torch.testing.assert_close(sampling.next_token_distribution(logits, 0.9, top_k=7), everything)
    torch.testing.assert_close(sampling.next_token_distribution(logits, 0.9, top_k=100), everything)
    one = sampling.next_token_distribution(logits, 3.0, top_k=1)
    assert torch.equal(one, torch.nn.functional.one_hot(logits.argmax(-1), 7).float())


def test_sampler_is_reproducible_and_draws_from_the_distribution():
    logits = torch.tensor([[1.0, 0.0, -1.0, 2.0]]).repeat(20000, 1)
    draw = lambda: sampling.sample_next_token(logits, 0.8, 3, torch.Generator().manual_seed(7))  # noqa: E731
    tokens = draw()
    assert torch.equal(tokens, draw()) and tokens.shape == (20000,) and tokens.dtype == torch.int64
    counts = torch.bincount(tokens, minlength=4).double() / len(tokens)
    expected = sampling.next_token_distribution(logits[:1], 0.8, 3)[0].double()
    assert counts[2] == 0                                        # outside the top 3: never drawn
    torch.testing.assert_close(counts, expected, atol=0.015, rtol=0)
    assert torch.equal(sampling.sample_next_token(logits[:3], 0, None, None), torch.tensor([3, 3, 3]))


def test_check_lets_the_learners_functions_through(capsys):
    assert check("next_token_distribution", dist_renormalised) is dist_renormalised
    assert check("sample_next_token", sample_argmax) is sampling.sample_next_token
    out = capsys.readouterr().out
    assert "✅ next_token_distribution passed" in out and "greedy decoding" in out


def test_the_cases_generators_are_not_used_up():
    """Each call gets its own copy of the case's generator: checking twice gives the same verdict."""
    assert verify("sample_next_token", sampling.sample_next_token)[0]
    assert verify("sample_next_token", sampling.sample_next_token)[0]
    assert not verify("sample_next_token", sample_global_rng)[0]


# ------------------------------------------------------------------------------------------------ the kit's sampler
@pytest.fixture(scope="module")
def tiny_model():
    from rlhf_kit.models import tiny_gpt2, train_tokenizer
    from rlhf_kit.presets import get_preset

    tokenizer = train_tokenizer(["This comedy about a dog is a delight!", "A dull horror film about a robot."] * 20,
                                vocab_size=300)
    torch.manual_seed(0)
    return tiny_gpt2(get_preset("micro"), tokenizer).eval(), tokenizer


def test_generate_top_k_1_is_greedy_and_top_k_none_is_unchanged(tiny_model):
    model, tokenizer = tiny_model
    prompts = ["This comedy", "A dull horror film about", "I"]
    greedy = sampling.generate(model, tokenizer, prompts, max_new_tokens=12, temperature=0)
    assert sampling.generate(model, tokenizer, prompts, max_new_tokens=12, temperature=1.3, top_k=1) == greedy
    sampled = sampling.generate(model, tokenizer, prompts, max_new_tokens=12, temperature=1.3, seed=3)
    assert sampled != greedy    # an untrained model at T = 1.3 does not happen to write its argmax text
    huge_k = sampling.generate(model, tokenizer, prompts, max_new_tokens=12, temperature=1.3, seed=3, top_k=10**6)
    assert huge_k == sampled


(test_reference_passes, test_independent_correct_versions_pass, test_typical_mistakes_are_named,
 test_catalogue_hints_are_all_covered, test_not_implemented_stub) = contract(NAMES, WRONG)
