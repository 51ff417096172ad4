"""The toy world's language: review attributes, the instruction prompt, and the grammar that writes reviews.

A review has a sentiment, a genre and a subject (`Attributes`); `format_prompt` and `parse_prompt` put them into
and take them out of the instruction format. `make_review` writes one review with a small template grammar whose
sentiment words are all in VADER's lexicon, with knobs for repetition, fluency and lukewarm wording, and `make_demo`
writes one demonstration with the human-like flaws of `DEMO_FLAWS`. `words` and `repetition_rate` are the text
measures the grammar checks its reviews with and the gold reward (`rlhf_kit.gold`) scores responses by.

`rlhf_kit.world` builds the data sets from these and re-exports every public name of this module.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

# ----------------------------------------------------------------------------------------------- attributes
SENTIMENTS = ("positive", "negative")
GENRES = ("comedy", "horror", "drama", "thriller", "romance", "western", "musical", "mystery")
SUBJECTS = ("a dog", "a robot", "a chef", "a detective", "a pirate", "a ghost", "a teacher", "a dragon",
            "a knight", "an astronaut")


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


# ------------------------------------------------------------------------------------------- text measures
_WORD_RE = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    """Lower-cased words of `text`, punctuation removed (the unit of the gold reward's length and repetition terms)."""
    return _WORD_RE.findall(text.lower())


def repetition_rate(text: str) -> float:
    """Fraction of word trigrams that repeat an earlier trigram of the same text (0 if fewer than 2)."""
    w = words(text)
    trigrams = list(zip(w, w[1:], w[2:]))
    if len(trigrams) < 2:
        return 0.0
    return (len(trigrams) - len(set(trigrams))) / len(trigrams)


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
