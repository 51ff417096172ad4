"""The toy world: short movie reviews with known attributes, and a transparent gold reward.

Every review has a sentiment (positive/negative), a genre ("comedy", ...) and a subject ("a dog", ...), and is
written by a small template grammar. From it, `build_world(seed)` makes three seeded data sets:

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
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# ----------------------------------------------------------------------------------------------- attributes
SENTIMENTS = ("positive", "negative")
GENRES = ("comedy", "horror", "drama", "thriller", "romance", "western", "musical", "mystery")
SUBJECTS = ("a dog", "a robot", "a chef", "a detective", "a pirate", "a ghost", "a teacher", "a dragon",
            "a knight", "an astronaut")

HELDOUT_FRACTION = 0.2   # share of (sentiment, genre, subject) combinations never seen in the demos


@dataclass(frozen=True)
class Attributes:
    sentiment: str   # one of SENTIMENTS
    genre: str       # e.g. "comedy"
    subject: str     # with its article, as it appears in text: "a dog", "an astronaut"


def random_attributes(rng: random.Random) -> Attributes:
    """Uniformly random sentiment, genre and subject."""
    return Attributes(rng.choice(SENTIMENTS), rng.choice(GENRES), rng.choice(SUBJECTS))


def subject_noun(subject: str) -> str:
    """The word the gold reward looks for: "an astronaut" -> "astronaut"."""
    return subject.split()[-1]


def _a(word: str) -> str:
    """Word with its indefinite article: "a comedy", "an awful"."""
    return ("an " if word[0] in "aeiou" else "a ") + word


# ---------------------------------------------------------------------------------------------- the prompt
PROMPT_TEMPLATE = "### Instruction:\n{instruction}\n### Response:\n"
_INSTRUCTION_RE = re.compile(r"Write an? (\w+) review of an? (\w+) about (an? \w+)\.")
_EXPECTED_FORM = ("'Write a <positive|negative> review of a <genre> about <a subject>.', optionally inside "
                  + repr(PROMPT_TEMPLATE))


def instruction_for(attrs: Attributes) -> str:
    """The bare instruction, e.g. "Write a positive review of a comedy about a dog."."""
    return f"Write a {attrs.sentiment} review of {_a(attrs.genre)} about {attrs.subject}."


def format_prompt(attrs: Attributes) -> str:
    """The instruction inside PROMPT_TEMPLATE; the model's response follows it directly."""
    return PROMPT_TEMPLATE.format(instruction=instruction_for(attrs))


def parse_prompt(prompt: str) -> Attributes:
    """Inverse of `format_prompt` (the bare instruction is accepted too).

    Any one-word genre and "a/an <noun>" subject parse, so learners may try e.g. "a cat"; the sentiment must be
    one of SENTIMENTS. Raises ValueError naming the text and the expected form otherwise.
    """
    text = prompt.strip()
    if text.startswith("### Instruction:"):
        text = text[len("### Instruction:"):]
        text = text.split("### Response:")[0]
    match = _INSTRUCTION_RE.fullmatch(text.strip())
    if match is None or match.group(1) not in SENTIMENTS:
        raise ValueError(f"Cannot parse the prompt {prompt!r}: expected {_EXPECTED_FORM}.")
    sentiment, genre, subject = match.groups()
    return Attributes(sentiment, genre, subject)


# ------------------------------------------------------------------------------------ the review grammar
# Every word that carries sentiment is in the VADER lexicon (tests check it); the other fillers are neutral.
POSITIVE_ADJECTIVES = ("wonderful", "great", "delightful", "brilliant", "charming", "lovely", "excellent",
                       "enjoyable", "beautiful", "funny", "fantastic", "superb", "amazing", "perfect", "clever",
                       "entertaining", "impressive", "gorgeous", "awesome", "hilarious", "sweet", "smart")
NEGATIVE_ADJECTIVES = ("boring", "dull", "awful", "terrible", "bad", "horrible", "disappointing", "weak",
                       "stupid", "dreadful", "lame", "annoying", "painful", "ugly", "dumb", "ridiculous", "poor",
                       "messy", "tired", "pathetic")
_NOUNS = {"positive": ("delight", "joy", "treat", "pleasure", "masterpiece"),
          "negative": ("mess", "failure", "disaster", "waste of time", "mistake")}
_VERBS = {"positive": ("loved", "enjoyed", "liked"), "negative": ("hated", "disliked")}
_FAMILY_VERBS = {"positive": ("love", "enjoy"), "negative": ("hate", "dislike")}
_PHRASES = {  # whole sentences that end a review
    "positive": ("Highly recommended!", "I would happily watch it again.", "Ten out of ten, I love it!",
                 "A true joy to watch.", "It made me so happy.", "Go and see it, you will love it!"),
    "negative": ("What a waste of time.", "Avoid it.", "I want my money back, it was awful.",
                 "A total disaster.", "It made me angry.", "I regret every minute I spent on it."),
}
# Every sentiment-carrying word of the grammar (single words; "waste of time" contributes "waste").
POSITIVE_WORDS = tuple(sorted({*POSITIVE_ADJECTIVES, *_NOUNS["positive"], *_VERBS["positive"],
                               *_FAMILY_VERBS["positive"]}))
NEGATIVE_WORDS = tuple(sorted({*NEGATIVE_ADJECTIVES, *(n.split()[0] for n in _NOUNS["negative"]),
                               *_VERBS["negative"], *_FAMILY_VERBS["negative"]}))
# Lukewarm words, for demonstrations whose writer did not care much: neutral or barely positive for VADER, so a
# lukewarm review earns little of the sentiment term. They replace every sentiment-carrying slot of a template.
MILD = {
    "positive": {"adj": ("okay", "fine", "decent", "watchable", "solid", "passable", "reasonable"),
                 "noun": ("film", "movie"), "verb": ("watched", "saw"), "fverb": ("watch", "see"),
                 "phrase": ("It was fine, I suppose.", "It passes the time.", "I might watch it again.")},
    "negative": {"adj": ("forgettable", "bland", "mediocre", "predictable", "flat", "generic", "overlong"),
                 "noun": ("film", "movie"), "verb": ("watched", "saw"), "fverb": ("watch", "sit through"),
                 "phrase": ("I expected more.", "Not my favourite.", "I would not watch it twice.")},
}
INTENSIFIERS = ("really", "very", "so", "absolutely", "utterly", "incredibly", "quite", "totally")
ASPECTS = ("the acting", "the music", "the ending", "the dialogue", "the script", "the cast", "the pacing",
           "the costume design", "the soundtrack", "the final scene", "the camera work", "the plot", "the set design",
           "the lead performance", "the first half", "the second half")
ACTIONS = ("wants to open a small bakery", "moves to a new town", "travels across the sea", "learns to sing",
           "opens a restaurant", "builds a tiny boat", "searches for a golden key", "visits a faraway island",
           "meets a talking cat", "starts a new job", "goes back to school", "plans a long journey",
           "finds an old letter", "climbs a tall mountain", "joins a travelling circus", "guards a quiet village",
           "writes a book", "moves into an old house", "sails to a distant island", "runs a small hotel",
           "looks for an old map", "enters a cooking contest", "wakes up in another century",
           "follows a trail of footprints")

# Openings that name the genre and the subject ({a_adj} = adjective with its article).
_OPEN_BOTH = (
    "This {genre} about {subject} is {adj}.",
    "This {genre} about {subject} is {a_noun}.",
    "What {a_adj} {genre} about {subject}!",
    "I {verb} this {genre} about {subject}.",
    "{A_adj} {genre} about {subject}.",
    "The new {genre} about {subject} is {int} {adj}.",
    "{Subject} stars in this {adj} {genre}.",
    "Here is {a_adj} {genre} starring {subject}.",
    "This {adj} {genre} tells the tale of {subject}.",
)
# Openings that name only the genre; a plot sentence naming the subject always follows them.
_OPEN_GENRE = (
    "This {genre} is {adj}.",
    "I watched this {genre} last night and it was {adj}.",
    "What {a_adj} {genre}!",
    "As {a_genre}, it is {int} {adj}.",
    "I {verb} this {genre}.",
)
_PLOTS = (
    "The story follows {subject} who {action}.",
    "{Subject} {action}, and that is the whole plot.",
    "In it, {subject} {action}.",
    "We follow {subject} who {action}.",
    "The film shows how {subject} {action}.",
)
_JUDGEMENTS = (
    "{Aspect} is {adj}.",
    "{Aspect} is {int} {adj}.",
    "{Aspect} and {aspect2} are both {adj}.",
    "I {verb} every minute of it.",
    "It is {a_noun} from start to finish.",
    "The whole family will {fverb} it.",
    "The {noun} is {adj} in every scene.",
    "{Aspect} feels {adj} and {aspect2} is {adj2}.",
)
_CLOSINGS = (
    "{Int} {adj}!",
    "Overall, {a_adj} film.",
    "{Adj}, from the first minute to the last.",
    "{phrase}",
)


def _fill(template: str, rng: random.Random, attrs: Attributes, adjectives: list[str], mild: bool = False) -> str:
    """Fill one template; each {adj} draws a fresh adjective from `adjectives` (popped, so none repeats).
    mild=True fills every sentiment-carrying slot (adjectives, nouns, verbs, closing phrases) with MILD words."""
    s = attrs.sentiment

    def adj():
        return adjectives.pop() if adjectives else rng.choice(
            MILD[s]["adj"] if mild else POSITIVE_ADJECTIVES if s == "positive" else NEGATIVE_ADJECTIVES)

    aspect, aspect2 = rng.sample(ASPECTS, 2)
    a_adj = _a(adj())
    values = {
        "genre": attrs.genre, "a_genre": _a(attrs.genre), "subject": attrs.subject,
        "noun": subject_noun(attrs.subject), "adj": adj(), "adj2": adj(), "a_adj": a_adj,
        "a_noun": _a(rng.choice(_NOUNS[s])), "verb": rng.choice(_VERBS[s]), "fverb": rng.choice(_FAMILY_VERBS[s]),
        "int": rng.choice(INTENSIFIERS), "aspect": aspect, "aspect2": aspect2, "action": rng.choice(ACTIONS),
        "phrase": rng.choice(_PHRASES[s]),
    }
    if mild:
        values.update({"a_noun": _a(rng.choice(MILD[s]["noun"])), "verb": rng.choice(MILD[s]["verb"]),
                       "fverb": rng.choice(MILD[s]["fverb"]), "phrase": rng.choice(MILD[s]["phrase"])})
    values.update({k[0].upper() + k[1:]: v[0].upper() + v[1:] for k, v in list(values.items())})
    return template.format(**values)


def _add_repetition(rng: random.Random, sentences: list[str], repetition: float) -> list[str]:
    """Each sentence, with probability `repetition`, gets a 1-3 word span repeated 1..(1 + 5 * repetition)
    extra times ("The acting is great great great."); with probability repetition / 2 the last sentence is
    repeated as well (the start of a loop)."""
    out = []
    for sentence in sentences:
        words = sentence.split()
        if rng.random() < repetition:
            i = rng.randrange(len(words))
            span = [w.strip(".!?,").lower() for w in words[i:i + rng.randint(1, 3)]]
            words = words[:i] + span * rng.randint(1, 1 + round(5 * repetition)) + words[i:]
        out.append(" ".join(words))
    if rng.random() < repetition / 2:
        out += [out[-1]] * rng.randint(1, 1 + round(2 * repetition))
    return out


def _reduce_fluency(rng: random.Random, text: str, fluency: float) -> str:
    """With p = 1 - fluency: drop each word with prob p/4 (at least 3 words stay), swap each pair of neighbours
    with prob p/2, and drop the final punctuation with prob p."""
    p = 1.0 - fluency
    words = text.split()
    kept = [w for w in words if rng.random() >= p / 4]
    words = kept if len(kept) >= 3 else words
    for i in range(len(words) - 1):
        if rng.random() < p / 2:
            words[i], words[i + 1] = words[i + 1], words[i]
    text = " ".join(words)
    if rng.random() < p:
        text = text.rstrip(".!?")
    return text


def _clean_sentences(rng: random.Random, attrs: Attributes, n_sentences: int, mild: bool = False) -> list[str]:
    """Opening, then (for 3+ sentences, sometimes) a neutral plot sentence, then judgements and a closing.
    At least two sentences carry sentiment whenever n_sentences >= 2."""
    pool = list(MILD[attrs.sentiment]["adj"] if mild else
                POSITIVE_ADJECTIVES if attrs.sentiment == "positive" else NEGATIVE_ADJECTIVES)
    rng.shuffle(pool)
    genre_only = n_sentences >= 3 and rng.random() < 0.35
    templates = [rng.choice(_OPEN_GENRE if genre_only else _OPEN_BOTH)]
    if genre_only or (n_sentences >= 3 and rng.random() < 0.5):
        templates.append(rng.choice(_PLOTS))
    rest = n_sentences - len(templates)
    if rest > 0:
        middle = rng.sample(_JUDGEMENTS, rest - 1)
        last = rng.choice(_CLOSINGS + _JUDGEMENTS) if rest == 1 else rng.choice(_CLOSINGS)
        templates += middle + [last]
    return [_fill(t, rng, attrs, pool, mild) for t in templates]


def make_review(rng: random.Random, attrs: Attributes, *, n_sentences: int | None = None,
                repetition: float = 0.0, fluency: float = 1.0, mild: bool = False) -> str:
    """One review of 2-4 sentences (random if n_sentences is None), about 10-45 words.

    Sentence 1 names the genre (and usually the subject); if it does not, sentence 2 is a neutral plot
    sentence naming the subject. The rest are judgements and closings whose sentiment words come from
    POSITIVE_WORDS / NEGATIVE_WORDS (all in VADER's lexicon), each adjective used at most once. A clean review
    (repetition=0, fluency=1) ends with '.' or '!' and no word trigram occurs in it twice.

    repetition in [0, 1]: chance per sentence of a repeated span (and of looping the last sentence).
    fluency in [0, 1]: 1 is clean; lower drops and swaps words and may drop the final punctuation.
    mild: a lukewarm review, every sentiment slot filled with MILD words (the sentiment term stays near 0).
    """
    if n_sentences is None:
        n_sentences = rng.randint(2, 4)
    if not 1 <= n_sentences <= 8:
        raise ValueError(f"n_sentences must be between 1 and 8, got {n_sentences}")
    for _ in range(100):  # resample the rare clean review in which a word trigram occurs twice
        sentences = _clean_sentences(rng, attrs, n_sentences, mild)
        if repetition_rate(" ".join(sentences)) == 0:
            break
    if repetition > 0:
        sentences = _add_repetition(rng, sentences, repetition)
    text = " ".join(sentences)
    if fluency < 1:
        text = _reduce_fluency(rng, text, fluency)
    return text


# ------------------------------------------------------------------------------------- the demonstrations
# How the demonstrations fall short, as human-written ones do. Each one draws a sentiment style (strong, lukewarm or
# mixed) and, independently, each of the other flaws, so a demonstration may have several. A flawless one scores
# about 2.3 of the gold reward's 2.5; these proportions bring the average down to about 1.6. SFT imitates that
# average, which leaves RL clear room above it: comparisons can take a policy beyond its demonstrations.
DEMO_FLAWS = {
    "lukewarm": 0.30,       # every sentiment word mild ("decent", "bland"): the sentiment term falls to about 0.1
    "mixed": 0.20,          # one sentence of the opposite sentiment (never together with lukewarm)
    "missed_topic": 0.30,   # the subject (a third of the time the genre instead) is never named
    "rambling": 0.15,       # 7-8 sentences and an aside: over 50 words
    "unfinished": 0.20,     # no final punctuation, half the time cut off mid-sentence
}
_MIXED = ("Sadly, {aspect} is {adj}.", "But {aspect} is {int} {adj}.", "{Aspect} is {adj}, though.",
          "I found {aspect} {adj}.")
_STAND_INS = (("a family", "family"), ("a young woman", "woman"), ("an old man", "man"), ("a stranger", "stranger"))
_ASIDES = ("Anyway, that is just what I think.", "I watched it with my sister on a rainy Sunday afternoon.",
           "The cinema was almost empty that night.", "My friends had told me about it for weeks.",
           "It runs for about two hours.")


def _replace_word(text: str, old: str, new: str) -> str:
    """Every whole-word `old` in `text` replaced by `new`, keeping a capital first letter."""
    return re.sub(rf"\b{re.escape(old)}\b", lambda m: new[0].upper() + new[1:] if m.group()[0].isupper() else new,
                  text, flags=re.IGNORECASE)


def make_demo(rng: random.Random, attrs: Attributes) -> tuple[str, list[str]]:
    """One demonstration for the prompt of `attrs`, with the flaws of DEMO_FLAWS drawn at their rates:
    (response, [names of its flaws]); an empty list is a clean review."""
    r = rng.random()
    flaws = ["lukewarm"] if r < DEMO_FLAWS["lukewarm"] else \
        ["mixed"] if r < DEMO_FLAWS["lukewarm"] + DEMO_FLAWS["mixed"] else []
    flaws += [name for name in ("missed_topic", "rambling", "unfinished") if rng.random() < DEMO_FLAWS[name]]
    n_sentences = rng.randint(7, 8) if "rambling" in flaws else rng.randint(2, 4)
    sentences = _clean_sentences(rng, attrs, n_sentences, mild="lukewarm" in flaws)
    if "mixed" in flaws:
        other = Attributes("negative" if attrs.sentiment == "positive" else "positive", attrs.genre, attrs.subject)
        pool = list(POSITIVE_ADJECTIVES if other.sentiment == "positive" else NEGATIVE_ADJECTIVES)
        rng.shuffle(pool)
        sentences.insert(rng.randint(1, len(sentences)), _fill(rng.choice(_MIXED), rng, other, pool))
    if "rambling" in flaws:
        asides = rng.sample(_ASIDES, len(_ASIDES))
        while len(words(" ".join(sentences))) <= 50 and asides:
            sentences.insert(rng.randint(1, len(sentences)), asides.pop())
    text = " ".join(sentences)
    if "missed_topic" in flaws:
        if rng.random() < 1 / 3:
            text = _replace_word(text, attrs.genre, "film")
        else:
            phrase, noun = rng.choice(_STAND_INS)
            text = _replace_word(_replace_word(text, attrs.subject, phrase), subject_noun(attrs.subject), noun)
    if "unfinished" in flaws:
        cut = text.split()
        if rng.random() < 0.5 and len(sentences) >= 2:
            last = len(words(sentences[-1]))
            cut = cut[:len(cut) - rng.randint(1, max(1, last - 2))]
        text = " ".join(cut).rstrip(".!?,")
    return text, flaws


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
    corpus = []
    for _ in range(n_corpus_docs):
        doc = _corpus_review(rng)
        for _ in range(rng.randint(3, 6) - 1):
            doc += rng.choice((" ", "\n")) + _corpus_review(rng)
        corpus.append(doc)

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


# ---------------------------------------------------------------------------------------------- gold reward
_WORD_RE = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    """Lower-cased words of `text`, punctuation removed (the unit of the length and repetition terms)."""
    return _WORD_RE.findall(text.lower())


def repetition_rate(text: str) -> float:
    """Fraction of word trigrams that repeat an earlier trigram of the same text (0 if fewer than 2)."""
    w = words(text)
    trigrams = list(zip(w, w[1:], w[2:]))
    if len(trigrams) < 2:
        return 0.0
    return (len(trigrams) - len(set(trigrams))) / len(trigrams)


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
    agrees with the gold ordering `target_agreement` (73%) of the time, like real human labellers.
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
