"""The toy world: short movie reviews with known attributes, and a transparent gold reward.

Every review has a sentiment (positive/negative), a genre ("comedy", ...) and a subject ("a dog", ...), and is
written by a small template grammar (`rlhf_kit.grammar`). From it, `build_world(seed)` makes three seeded data sets:

* `corpus`: plain "review pages" (3-6 reviews of random attributes in a row, ~10% of them low quality, some
  lukewarm) to pretrain a tiny GPT-2. It never contains the instruction format.
* `demos`: instruction demonstrations, "### Instruction:\\nWrite a positive review of a comedy about a dog.\\n
  ### Response:\\n" followed by one review written for it, for supervised fine-tuning. Like human-written
  demonstrations they are uneven (`DEMO_FLAWS`: lukewarm or mixed sentiment, a missed subject, rambling, unfinished),
  so SFT, which imitates them, lands well below the gold maximum and leaves RL room to improve on them.
* `heldout`: instruction prompts whose (sentiment, genre, subject) combination never occurs in `demos`.

`gold_reward(prompt, response)` is the "true" objective that RLHF tries to optimise without seeing it
(VADER sentiment in the asked direction + topic + form, see its docstring), and `SimulatedAnnotator` turns it
into noisy human-like preferences that agree with the gold ordering about 73% of the time.

Where each part lives:

* `rlhf_kit.grammar`: the attributes (`Attributes`, SENTIMENTS, GENRES, SUBJECTS), the prompt format
  (`format_prompt`, `parse_prompt`), the word lists, `make_review`, and `make_demo` with DEMO_FLAWS;
* `rlhf_kit.gold`: `gold_reward` / `gold_breakdown`, `follows_format` and the simulated annotator;
* this module: `World`, `build_world` and the held-out split, the workspace stage `build`, `save_world` /
  `load_world`. It re-exports the public names of the other two, so `from rlhf_kit.world import ...` reaches
  every part of the toy world.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path

# Re-exported, so that `from rlhf_kit.world import ...` reaches every part of the toy world (see the docstring).
from .gold import (  # noqa: F401  (re-exported)
    SimulatedAnnotator,
    annotator_prob_a,
    calibrate_temperature,
    follows_format,
    gold_breakdown,
    gold_reward,
    reference_pairs,
    vader_compound,
    verifier_reward,
)
from .grammar import (  # noqa: F401  (re-exported)
    ACTIONS,
    ASPECTS,
    DEMO_FLAWS,
    GENRES,
    INTENSIFIERS,
    MILD,
    NEGATIVE_ADJECTIVES,
    NEGATIVE_WORDS,
    POSITIVE_ADJECTIVES,
    POSITIVE_WORDS,
    PROMPT_TEMPLATE,
    SENTIMENTS,
    SUBJECTS,
    Attributes,
    format_prompt,
    instruction_for,
    make_demo,
    make_review,
    parse_prompt,
    random_attributes,
    repetition_rate,
    subject_noun,
    words,
)

HELDOUT_FRACTION = 0.2   # share of (sentiment, genre, subject) combinations never seen in the demos


# ------------------------------------------------------------------------------------------------ the world
@dataclass
class World:
    corpus: list[str]     # plain pretraining documents (no instruction format)
    demos: list[dict]     # {"prompt", "response", "sentiment", "genre", "subject", "flaws"}
    heldout: list[dict]   # {"prompt", "sentiment", "genre", "subject"}, combinations absent from demos
    seed: int


def split_combinations(seed: int = 0) -> tuple[list[Attributes], list[Attributes]]:
    """(train, heldout): all sentiment x genre x subject combinations, round(HELDOUT_FRACTION * total) held out,
    chosen at random such that every sentiment, genre and subject still occurs among the train combinations."""
    rng = random.Random(f"world-{seed}-split")
    combos = [Attributes(*c) for c in itertools.product(SENTIMENTS, GENRES, SUBJECTS)]
    n_hold = round(HELDOUT_FRACTION * len(combos))
    while True:
        rng.shuffle(combos)
        train, held = combos[n_hold:], combos[:n_hold]
        if all({getattr(a, f) for a in train} == set(values)
               for f, values in (("sentiment", SENTIMENTS), ("genre", GENRES), ("subject", SUBJECTS))):
            return sorted(train, key=_key), sorted(held, key=_key)


def _key(a: Attributes) -> tuple:
    return (a.sentiment, a.genre, a.subject)


def _corpus_review(rng: random.Random) -> str:
    """A review of random attributes; 10% are low quality (repetitive or disfluent) and 20% of the rest lukewarm,
    as on the web."""
    attrs = random_attributes(rng)
    if rng.random() < 0.1:
        if rng.random() < 0.5:
            return make_review(rng, attrs, repetition=rng.uniform(0.3, 1.0))
        return make_review(rng, attrs, fluency=rng.uniform(0.3, 0.7))
    return make_review(rng, attrs, mild=rng.random() < 0.2)


def _corpus_page(rng: random.Random) -> str:
    """A review page: 3-6 reviews of random attributes joined by " " or "\\n"."""
    doc = _corpus_review(rng)
    for _ in range(rng.randint(3, 6) - 1):
        doc += rng.choice((" ", "\n")) + _corpus_review(rng)
    return doc


def heldout_pages(seed: int = 0, n: int = 64) -> list[str]:
    """n review pages like the pretraining corpus's, from a random stream of their own, so no model of the world
    `seed` was pretrained on them: what lab 08 measures the alignment tax on (how much worse each policy predicts
    plain pages than the base model)."""
    rng = random.Random(f"world-{seed}-heldout-pages")
    return [_corpus_page(rng) for _ in range(n)]


def build_world(seed: int = 0, n_corpus_docs: int = 2000, n_demos: int = 1000, n_heldout: int = 64) -> World:
    """Generate the world; the same arguments always give the same world.

    corpus: n_corpus_docs review pages, each 3-6 reviews of random attributes joined by " " or "\\n".
    demos: n_demos single reviews (`make_demo`: some with flaws, at the DEMO_FLAWS rates) for prompts drawn
    uniformly from the train combinations.
    heldout: n_heldout prompts cycling through the (shuffled) held-out combinations, so they are all
    distinct when n_heldout <= the number of held-out combinations (32), repeated otherwise.
    Each part has its own random stream, so e.g. changing n_demos leaves the corpus unchanged.
    """
    train, held = split_combinations(seed)

    rng = random.Random(f"world-{seed}-corpus")
    corpus = [_corpus_page(rng) for _ in range(n_corpus_docs)]

    rng = random.Random(f"world-{seed}-demos")
    demos = []
    for _ in range(n_demos):
        attrs = rng.choice(train)
        response, flaws = make_demo(rng, attrs)
        demos.append({"prompt": format_prompt(attrs), "response": response, "sentiment": attrs.sentiment,
                      "genre": attrs.genre, "subject": attrs.subject, "flaws": flaws})

    rng = random.Random(f"world-{seed}-heldout")
    order = list(held)
    rng.shuffle(order)
    heldout = [{"prompt": format_prompt(a), "sentiment": a.sentiment, "genre": a.genre, "subject": a.subject}
               for a in itertools.islice(itertools.cycle(order), n_heldout)]
    return World(corpus=corpus, demos=demos, heldout=heldout, seed=seed)


def heldout_prompts(world: World) -> list[str]:
    """The held-out instructions: never trained on, every evaluation of a policy uses them."""
    return [row["prompt"] for row in world.heldout]


def training_prompts(world: World) -> list[str]:
    """The distinct instructions of the demonstrations, in order: what preferences and RL train on."""
    return list(dict.fromkeys(d["prompt"] for d in world.demos))


def build(ws, out_dir: Path) -> dict:
    """Workspace stage `world`: generate the toy corpus, demonstrations and held-out prompts."""
    p = ws.preset
    world = build_world(ws.seed, p.n_corpus_docs, p.n_demos, p.n_heldout)
    save_world(world, out_dir)
    return {"corpus_docs": len(world.corpus), "demos": len(world.demos), "heldout": len(world.heldout)}


def demo_flaw_rates(world: World) -> dict[str, float]:
    """The share of the world's demonstrations with each flaw (see DEMO_FLAWS), and "none" for the flawless."""
    n = len(world.demos)
    rates = {flaw: sum(flaw in d.get("flaws", ()) for d in world.demos) / n for flaw in DEMO_FLAWS}
    return {**rates, "none": sum(not d.get("flaws") for d in world.demos) / n}


_FILES = ("corpus.jsonl", "demos.jsonl", "heldout.jsonl", "world.json")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def save_world(world: World, directory) -> None:
    """Write corpus.jsonl ({"text"}), demos.jsonl, heldout.jsonl and world.json (seed and sizes) to `directory`.

    Every .jsonl file reads with `datasets.load_dataset("json", data_files=str(path))`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write_jsonl(directory / "corpus.jsonl", [{"text": doc} for doc in world.corpus])
    _write_jsonl(directory / "demos.jsonl", world.demos)
    _write_jsonl(directory / "heldout.jsonl", world.heldout)
    meta = {"seed": world.seed, "n_corpus_docs": len(world.corpus), "n_demos": len(world.demos),
            "n_heldout": len(world.heldout), "heldout_fraction": HELDOUT_FRACTION}
    (directory / "world.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def load_world(directory) -> World:
    """Read what `save_world` wrote; FileNotFoundError naming the first missing file."""
    directory = Path(directory)
    for name in _FILES:
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} is missing: run `rlhf-kit pretrain` "
                                    f"(or ensure('world')) to build it.")
    meta = json.loads((directory / "world.json").read_text(encoding="utf-8"))
    return World(corpus=[row["text"] for row in _read_jsonl(directory / "corpus.jsonl")],
                 demos=_read_jsonl(directory / "demos.jsonl"),
                 heldout=_read_jsonl(directory / "heldout.jsonl"),
                 seed=meta["seed"])
