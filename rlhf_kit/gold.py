"""The toy world's gold reward and its simulated annotator.

`gold_reward(prompt, response)` is the "true" objective that RLHF tries to optimise without seeing it (VADER
sentiment in the asked direction + topic + form; `gold_breakdown`'s docstring has the formula), and
`follows_format` says whether a response is one finished review. `SimulatedAnnotator` turns the gold reward into
noisy human-like preferences (a Bradley-Terry model with its temperature calibrated on `reference_pairs`) that
agree with the gold ordering about 73% of the time.

Prompts and responses are those of `rlhf_kit.grammar`; `rlhf_kit.world` re-exports every public name of this module.
"""

from __future__ import annotations

import math
import random
import re
from functools import lru_cache

from .grammar import (
    GENRES,
    SUBJECTS,
    Attributes,
    format_prompt,
    make_review,
    parse_prompt,
    random_attributes,
    repetition_rate,
    subject_noun,
    words,
)


# ---------------------------------------------------------------------------------------------- gold reward
@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


@lru_cache(maxsize=65536)
def vader_compound(text: str) -> float:
    """VADER's compound sentiment score of `text`, in [-1, 1]."""
    return _vader().polarity_scores(text)["compound"]


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", text, flags=re.IGNORECASE) is not None


def _ends_with_punctuation(response: str) -> bool:
    return response.rstrip().endswith((".", "!", "?"))


def gold_breakdown(prompt: str, response: str) -> dict[str, float]:
    """The gold reward's components and their sum, for the attributes parsed from `prompt`.

        gold = sentiment + topic + form

        sentiment = s * compound       compound = VADER compound score of the response, in [-1, 1];
                                       s = +1 if a positive review was asked for, -1 if a negative one
        topic     = 0.5 * [genre word mentioned] + 0.5 * [subject noun mentioned]
                                       (case-insensitive, whole word: "comedy", "dog" for "a dog")
        form      = ending + length + repetition + new_block, where
            ending     = +0.5 if the response ends with '.', '!' or '?', else -0.5
            length     = -0.5 if it has fewer than 5 or more than 50 words, else 0
            repetition = -2.0 * (fraction of word trigrams that repeat an earlier trigram of the response)
            new_block  = -1.0 if the response contains "###" (it started a new instruction block), else 0

    Words are lower-cased runs of letters, digits and apostrophes. A clean review that does what was asked
    scores about 2.0-2.5; the maximum is 2.5. VADER knows some genre words ("horror" is negative, "comedy" and
    "romance" positive), so the sentiment term is a little easier to earn for some prompts than for others.

    Returns {"sentiment", "topic", "ending", "length", "repetition", "new_block", "total"}.
    """
    attrs = parse_prompt(prompt)
    s = 1.0 if attrs.sentiment == "positive" else -1.0
    n_words = len(words(response))
    parts = {
        "sentiment": s * vader_compound(response),
        "topic": 0.5 * _mentions(response, attrs.genre) + 0.5 * _mentions(response, subject_noun(attrs.subject)),
        "ending": 0.5 if _ends_with_punctuation(response) else -0.5,
        "length": -0.5 if n_words < 5 or n_words > 50 else 0.0,
        "repetition": -2.0 * repetition_rate(response),
        "new_block": -1.0 if "###" in response else 0.0,
    }
    parts["total"] = sum(parts.values())
    return parts


def gold_reward(prompt: str, response: str) -> float:
    """sentiment + topic + form; see `gold_breakdown` for the formula."""
    return gold_breakdown(prompt, response)["total"]


def verifier_reward(prompt: str, response: str) -> float:
    """A reward that is a program (lab 07, RLVR): the gold reward's checkable terms, everything but sentiment.

        verifier = topic + ending + length + repetition + new_block      (the terms of `gold_breakdown`)

    It checks what a rule can check: the requested genre and subject are mentioned, the response is one finished
    review (ends with '.', '!' or '?', no new "###" block, no repeated trigrams) of 5-50 words. It cannot see
    whether the review has the requested sentiment, which is half of what the instruction asked. Range: -3.5 to 1.5.
    """
    parts = gold_breakdown(prompt, response)
    return sum(value for term, value in parts.items() if term not in ("sentiment", "total"))


def follows_format(response: str) -> bool:
    """True iff the response is one finished review: it ends with '.', '!' or '?', has 5-50 words, its
    repetition rate is below 0.2, it contains no "###" and no line break (on the pretraining pages a new line
    starts the next review: a base model that writes two short reviews, one per line, has not answered)."""
    n_words = len(words(response))
    return (_ends_with_punctuation(response) and 5 <= n_words <= 50 and repetition_rate(response) < 0.2
            and "###" not in response and "\n" not in response.strip())


# ---------------------------------------------------------------------------------- the simulated annotator
def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def annotator_prob_a(gold_a: float, gold_b: float, temperature: float) -> float:
    """P(annotator prefers A) = sigmoid((gold_a - gold_b) / T), a Bradley-Terry model on the gold reward."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return _sigmoid((gold_a - gold_b) / temperature)


def calibrate_temperature(gold_diffs, target_agreement: float = 0.73) -> float:
    """The T for which the expected agreement with the gold ordering equals `target_agreement`:

        mean over pairs with diff != 0 of sigmoid(|diff| / T) == target_agreement

    The left side falls from 1 (T -> 0) to 0.5 (T -> inf), so T is found by bisection (on log T).
    """
    if not 0.5 < target_agreement < 1.0:
        raise ValueError(f"target_agreement must be in (0.5, 1), got {target_agreement}")
    diffs = [abs(float(d)) for d in gold_diffs if d != 0]
    if not diffs:
        raise ValueError("calibrate_temperature needs at least one pair with a non-zero gold difference")

    def agreement(t: float) -> float:
        return sum(_sigmoid(d / t) for d in diffs) / len(diffs)

    lo, hi = 1.0, 1.0
    while agreement(lo) < target_agreement:
        lo /= 2
    while agreement(hi) > target_agreement:
        hi *= 2
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        if agreement(mid) > target_agreement:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


_PAIR_KINDS = ("clean", "wrong_sentiment", "off_topic", "repetitive", "truncated")


def _candidate(rng: random.Random, attrs: Attributes, kind: str) -> str:
    """A plausible response of one kind (see `reference_pairs`) to the prompt for `attrs`."""
    if kind == "clean":
        return make_review(rng, attrs)
    if kind == "wrong_sentiment":
        other = "negative" if attrs.sentiment == "positive" else "positive"
        return make_review(rng, Attributes(other, attrs.genre, attrs.subject))
    if kind == "off_topic":
        genre = rng.choice([g for g in GENRES if g != attrs.genre])
        subject = rng.choice([s for s in SUBJECTS if s != attrs.subject])
        return make_review(rng, Attributes(attrs.sentiment, genre, subject))
    if kind == "repetitive":
        return make_review(rng, attrs, repetition=rng.uniform(0.3, 0.6))
    if kind == "truncated":
        w = make_review(rng, attrs).split()
        return " ".join(w[:rng.randint(max(3, len(w) // 2), len(w) - 1)]).rstrip(".!?,")
    raise ValueError(f"unknown kind {kind!r}; kinds are {_PAIR_KINDS}")


def reference_pairs(seed: int = 0, n: int = 400) -> list[tuple[str, str, str]]:
    """n (prompt, response_a, response_b) pairs of the kind a labeller compares: two candidates for the same
    random prompt, each independently one of: a clean on-topic review, the wrong sentiment, off-topic (other
    genre and subject), slightly repetitive, or truncated (cut mid-way, no final punctuation)."""
    rng = random.Random(f"reference-pairs-{seed}")
    pairs = []
    for _ in range(n):
        attrs = random_attributes(rng)
        a, b = (_candidate(rng, attrs, rng.choice(_PAIR_KINDS)) for _ in range(2))
        pairs.append((format_prompt(attrs), a, b))
    return pairs


class SimulatedAnnotator:
    """A noisy labeller: prefers A with probability sigmoid((gold(A) - gold(B)) / temperature).

    With temperature=None, the temperature is calibrated on `reference_pairs(seed)` so that the annotator
    agrees with the gold ordering `target_agreement` (73%) of the time: calibrated on agreement with the truth,
    which is not what InstructGPT's 72.6% measured (agreement between two labellers; see rlhf_kit.agreement).
    Its choices are drawn from its own random.Random(seed), so a run is reproducible.
    """

    def __init__(self, temperature: float | None = None, target_agreement: float = 0.73, seed: int = 0):
        if temperature is None:
            diffs = [gold_reward(p, a) - gold_reward(p, b) for p, a, b in reference_pairs(seed)]
            temperature = calibrate_temperature(diffs, target_agreement)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.rng = random.Random(seed)

    def prob_a(self, prompt: str, response_a: str, response_b: str) -> float:
        return annotator_prob_a(gold_reward(prompt, response_a), gold_reward(prompt, response_b), self.temperature)

    def prefer(self, prompt: str, response_a: str, response_b: str) -> str:
        """"A" or "B", sampled."""
        return "A" if self.rng.random() < self.prob_a(prompt, response_a, response_b) else "B"
