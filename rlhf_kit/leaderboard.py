"""Lab 08: every policy of the course on one leaderboard, judged several ways, with error bars.

    status = policy_status(ws)            # which policies exist; the command that builds each missing one
    board = leaderboard(ws)               # measure what exists (ensure_policies(ws) builds the rest first)
    leaderboard_frame(board)              # one row per policy, sorted by gold
    export(board)                         # leaderboard.csv/.md/.json and report.html in <workspace>/leaderboard

Every policy answers each distinct held-out instruction `samples_per_prompt` times, from the same random
streams (`evaluate.score_with_kl`), so two policies' answers in the same slot differ only by the policy. Each pair
of policies is then compared slot by slot by each judge:

    gold      the gold reward (the truth of the toy world; a real project has none)
    rm        lab 03's reward model (the proxy PPO, GRPO and best-of-n optimised)
    labeller  the simulated human labeller of lab 02 (noisy: agrees with gold about 73% of the time)
    ai        lab 07's AI judge (a sentence encoder against the constitution), when its package is installed

The leaderboard's rating is the Bradley-Terry fit (lab 03's model, a new use) to the labeller's verdicts, as
Chatbot Arena fits one to people's votes, with a bootstrap interval over instructions, anchored at SFT = 0.
"""

from __future__ import annotations

import base64
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .workspace import COMMANDS, Workspace, default_home

if TYPE_CHECKING:          # torch is imported where it is used, so the command line starts fast
    import torch

# name -> (the stage whose folder holds it, what it is)
POLICIES: dict[str, tuple[str, str]] = {
    "base": ("base", "the pretrained model (lab 00)"),
    "sft": ("sft", "supervised fine-tuning on demonstrations (lab 01)"),
    "best-of-4": ("reward", "4 SFT samples, the reward model's favourite kept (lab 05; no training)"),
    "ppo": ("ppo", "PPO at the preset's beta (lab 04)"),
    "ppo-beta0": ("hacked", "PPO at beta = 0 with 4x the learning rate: lab 05's reward hacking"),
    "dpo": ("dpo", "DPO on the preference pairs (lab 06)"),
    "grpo": ("grpo", "GRPO against lab 03's reward model (lab 07)"),
    "grpo-ai": ("grpo-ai", "GRPO against a reward model trained on AI labels (lab 07)"),
}
BEST_OF = 4
JUDGES: dict[str, str] = {
    "gold": "the gold reward (truth)",
    "rm": "lab 03's reward model (the proxy)",
    "labeller": "the simulated human labeller",
    "ai": "lab 07's AI judge (all-MiniLM-L6-v2 against the constitution)",
}
RATING_JUDGE = "labeller"
REFERENCE = "sft"


# ------------------------------------------------------------------------------------------- which policies exist
def _command(ws: Workspace, stage: str) -> str:
    where = "" if ws.home == default_home() else f" --workspace {ws.home}"
    return f"rlhf-kit {COMMANDS[stage]} --preset {ws.preset.name} --seed {ws.seed}{where}"


def policy_status(ws: Workspace, names=None) -> dict[str, dict]:
    """{name: {"stage", "ready": bool, "problem": None or what is wrong ("missing", "built with other settings
    (...)", "damaged ..."), "command": what builds it}} for each policy of POLICIES named (default: all)."""
    names = list(POLICIES) if names is None else list(names)
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ValueError(f"unknown policies {', '.join(map(repr, unknown))}; the policies are: "
                         f"{', '.join(POLICIES)}.")
    status = {}
    for name in names:
        stage = POLICIES[name][0]
        record, problem = ws.done_record(stage)
        changed = ws.changed_settings(stage) if record is not None else {}
        if record is None:
            problem = f"its {stage!r} stage is damaged ({problem})" if problem else f"its {stage!r} stage is missing"
        elif changed:
            problem = (f"its {stage!r} stage was built with other {ws.preset.name!r} settings ("
                       + ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items()) + ")")
        status[name] = {"stage": stage, "ready": record is not None and not changed, "problem": problem,
                        "command": _command(ws, stage)}
    return status


def ensure_policies(ws: Workspace, names=None) -> dict[str, dict]:
    """Build every named policy's stage that is missing or stale (`Workspace.ensure`), then `policy_status`."""
    for name in list(POLICIES) if names is None else names:
        ws.ensure(POLICIES[name][0])
    return policy_status(ws, names)


# ------------------------------------------------------------------------------------------- measuring one policy
def page_loss(model, tokenizer, pages: list[str], max_len: int) -> float:
    """Mean next-token loss (nats per token) of `model` on `pages`, each cut to its first `max_len` tokens."""
    import torch

    device = next(model.parameters()).device
    total, count = 0.0, 0
    for page in pages:
        ids = tokenizer(page, return_tensors="pt", truncation=True, max_length=max_len)["input_ids"].to(device)
        if ids.shape[1] < 2:
            continue
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss
        total += loss.item() * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    if not count:
        raise ValueError("page_loss() got no page of 2 or more tokens.")
    return total / count


def same_tokenizer(a, b) -> bool:
    """True when two tokenizers split text into the same ids (then KL and the per-token loss compare)."""
    return a.get_vocab() == b.get_vocab() and a.eos_token_id == b.eos_token_id


def _with_lengths(result: dict) -> dict:
    for row in result["samples"]:
        row["length"] = len(row["response"].split())
    return result


def measure_policy(ws, model, tokenizer, ref, ref_tokenizer, scorer, prompts: list[str]) -> dict:
    """`evaluate.score_with_kl` of one policy on `prompts` (the workspace's sampling settings and seed), KL from
    `ref` (SFT). A policy with another tokenizer is measured through its text: its "kl" is None (not comparable).
    Each sample row also gets "length" (words)."""
    from .evaluate import score_with_kl

    comparable = same_tokenizer(tokenizer, ref_tokenizer)
    result = score_with_kl(model, ref if comparable else model, tokenizer, prompts, scorer, ws.preset.max_new_tokens,
                           ws.preset.eval_temperature, ws.seed)
    if not comparable:
        result["kl"] = None
        for row in result["samples"]:
            row["kl"] = None
    return _with_lengths(result)


def best_of_n_policy(ws, model, tokenizer, scorer, instructions: list[str], samples_per_prompt: int,
                     n: int = BEST_OF) -> dict:
    """Best-of-n from the SFT policy as a policy: n * samples_per_prompt samples of each of `instructions`, split
    into groups of n, the reward model's favourite of each group kept: `samples_per_prompt` answers per instruction,
    instruction by instruction (the order of `measure_policy` on each instruction repeated samples_per_prompt times).
    Its "kl" is `hacking.empirical_best_of_n_kl` on each instruction's samples (exact for their empirical
    distribution)."""
    import torch

    from .evaluate import score_samples, summarise
    from .hacking import best_of_n_select, empirical_best_of_n_kl
    from .sampling import generate

    k = n * samples_per_prompt
    repeated = [p for p in instructions for _ in range(k)]
    texts = generate(model, tokenizer, repeated, ws.preset.max_new_tokens, ws.preset.eval_temperature,
                     seed=ws.seed + 1)
    scored = score_samples(repeated, texts, scorer)
    proxy = torch.tensor([row["proxy"] for row in scored]).reshape(len(instructions), k)
    picks = best_of_n_select(proxy, n)                                   # (instructions, samples_per_prompt)
    rows = []
    for i in range(len(instructions)):
        kl = empirical_best_of_n_kl(proxy[i].tolist(), n, texts[i * k:(i + 1) * k])
        rows += [{**scored[i * k + int(j)], "kl": kl} for j in picks[i]]
    result = summarise(rows)
    result["kl"] = sum(row["kl"] for row in rows) / len(rows)
    return _with_lengths(result)


# ------------------------------------------------------------------------------------------- judging pairs
@dataclass
class Matches:
    """Every pairwise comparison of the board, one per (policy pair, instruction, sample slot):
    pairs (m, 2) long: the policies' indices; prompt (m,) long: the instruction's index; slot (m,) long;
    outcomes {judge: (m,) float, 1 = the first policy's answer won, 0.5 tie, 0 lost}."""
    names: list[str]
    pairs: torch.Tensor
    prompt: torch.Tensor
    slot: torch.Tensor
    outcomes: dict[str, torch.Tensor]

    def table(self, judge: str) -> torch.Tensor:
        """(m, 3) rows (player_i, player_j, score_i): what `ratings.bradley_terry_ratings` takes."""
        import torch

        return torch.cat([self.pairs.float(), self.outcomes[judge][:, None]], 1)

    def between(self, a: str, b: str, judge: str) -> torch.Tensor:
        """(n_prompts, slots) outcomes of `a` against `b` by `judge` (1 = a won), rows the instructions."""
        i, j = self.names.index(a), self.names.index(b)
        flip = False
        keep = (self.pairs[:, 0] == i) & (self.pairs[:, 1] == j)
        if not keep.any():
            keep, flip = (self.pairs[:, 0] == j) & (self.pairs[:, 1] == i), True
        y = self.outcomes[judge][keep]
        y = 1 - y if flip else y
        n_prompts = int(self.prompt[keep].max()) + 1
        return y.reshape(n_prompts, -1)


def _outcome(diff: float) -> float:
    return 1.0 if diff > 0 else 0.0 if diff < 0 else 0.5


def judge_matches(results: dict[str, dict], n_prompts: int, judges, ai_judge=None, seed: int = 0) -> tuple:
    """Compare every pair of policies slot by slot with each judge in `judges` (keys of JUDGES). `results` are the
    policies' measurements (`measure_policy`), their samples in the same order: instruction by instruction,
    the same number of slots each. Identical answers tie for every judge. Returns (Matches, position): position
    is the AI judge's {"first_slot_rate", "flip_rate", "n"} (each pair asked in both orders), or {}."""
    import torch

    from .gold import SimulatedAnnotator

    names = list(results)
    samples = {name: results[name]["samples"] for name in names}
    n = len(samples[names[0]])
    if any(len(s) != n for s in samples.values()) or n % n_prompts:
        raise ValueError("judge_matches: every policy needs the same number of samples, a multiple of n_prompts.")
    slots = n // n_prompts
    pairs, index = [], []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            for k in range(n):
                pairs.append((a, b))
                index.append(k)
    rows = [(samples[names[a]][k], samples[names[b]][k]) for (a, b), k in zip(pairs, index)]
    same = [x["response"] == y["response"] for x, y in rows]
    outcomes = {}
    if "gold" in judges:
        outcomes["gold"] = [_outcome(x["gold"] - y["gold"]) for x, y in rows]
    if "rm" in judges:
        outcomes["rm"] = [_outcome(x["proxy"] - y["proxy"]) for x, y in rows]
    if "labeller" in judges:
        labeller = SimulatedAnnotator(seed=seed)
        outcomes["labeller"] = [0.5 if s else 1.0 if labeller.prefer(x["prompt"], x["response"], y["response"]) == "A"
                                else 0.0 for (x, y), s in zip(rows, same)]
    position = {}
    if "ai" in judges and ai_judge is not None:
        verdicts = ai_judge.judge_pairs([{"prompt": x["prompt"], "response_a": x["response"],
                                          "response_b": y["response"]} for x, y in rows])
        outcomes["ai"] = [0.5 if s else {"A": 1.0, "B": 0.0, "tie": 0.5}[v["verdict"]]
                          for v, s in zip(verdicts, same)]
        asked = [v for v, s in zip(verdicts, same) if not s]
        if asked:
            position = {"judge": ai_judge.name, "n": len(asked),
                        "first_slot_rate": sum((v["p_ab"] > 0.5) + (v["p_ba"] > 0.5) for v in asked) / (2 * len(asked)),
                        "flip_rate": sum(bool(v["flips"]) for v in asked) / len(asked)}
    index = torch.tensor(index)
    matches = Matches(names, torch.tensor(pairs, dtype=torch.long), index // slots, index % slots,
                      {k: torch.tensor(v, dtype=torch.float32) for k, v in outcomes.items()})
    return matches, position


def judge_agreement(matches: Matches) -> dict[str, dict[str, float | None]]:
    """{judge: {judge: share of the comparisons both decided (no tie) on which they pick the same answer}}."""
    out = {}
    for a, ya in matches.outcomes.items():
        out[a] = {}
        for b, yb in matches.outcomes.items():
            decided = (ya != 0.5) & (yb != 0.5)
            out[a][b] = round((ya[decided] == yb[decided]).float().mean().item(), 4) if decided.any() else None
    return out


def proxy_gold_disagreements(policies: dict[str, dict], reference: str = REFERENCE) -> list[str]:
    """The policies the proxy (reward model) ranks above `reference` while gold ranks them below: reward hacking."""
    ref = policies[reference]
    return [name for name, row in policies.items()
            if name != reference and row["proxy"] > ref["proxy"] and row["gold"] < ref["gold"]]


# ------------------------------------------------------------------------------------------- the board
def _load(ws, name: str, extra: dict):
    from .models import load_causal_lm

    return load_causal_lm(extra[name] if name in extra else ws.path(POLICIES[name][0] if name != "best-of-4"
                                                                      else "sft"))


def leaderboard(ws, policies=None, judges=None, extra: dict | None = None, samples_per_prompt: int | None = None,
                n_boot: int = 200, win_rate_fn: Callable | None = None, ratings_fn: Callable | None = None,
                distinct_fn: Callable | None = None, progress: bool = True) -> dict:
    """Measure and rank the named policies that exist (default: all of POLICIES; missing or stale ones are listed
    in "missing" with the command that builds them, never built here: `ensure_policies` does that), plus `extra`
    ({name: local Hugging Face causal-LM directory}). judges: keys of JUDGES (default all; "ai" is left out when
    its package is missing). samples_per_prompt: answers per distinct held-out instruction (default: as many
    answers in all as labs 05-07 measure, 4 per held-out prompt; the world repeats instructions when n_heldout is
    above its 32 held-out combinations, so `lab` gets 8 answers to each of 32). win_rate_fn / ratings_fn /
    distinct_fn: the learner's `win_rate`, `bradley_terry_ratings` and `distinct_n` (default the kit's,
    `rlhf_kit.ratings`); the rating's interval is always the kit's bootstrap over instructions.

    Returns {"policies": {name: {"rating", "rating_ci", "elo", "gold", "proxy", "kl", "length", "format_rate",
    "distinct_2", "alignment_tax", "win_rate_vs_sft", "stage"}}, "win_rates": {judge: {name: [rate, low, high]}},
    "length_controlled": {judge: {name: {"win_rate", "lc_win_rate", "length_slope"}}}, "ratings_by_judge":
    {judge: {name: rating}}, "judge_agreement", "position_bias", "proxy_up_gold_down": [names], "missing":
    {name: {"problem", "command"}}, "samples": {name: rows}, "matches": Matches, "seconds"}.
    kl is nats per response from SFT; alignment_tax the policy's loss on held-out review pages minus the base
    model's (nats per token; None for another tokenizer); length in words."""
    import torch

    from . import ratings
    from .hacking import distinct_heldout_prompts, heldout_prompts
    from .reward import RewardScorer
    from .world import heldout_pages

    started = time.perf_counter()
    extra = dict(extra or {})
    judges = list(JUDGES) if judges is None else list(judges)
    bad = [j for j in judges if j not in JUDGES]
    if bad:
        raise ValueError(f"unknown judges {', '.join(map(repr, bad))}; the judges are: {', '.join(JUDGES)}.")
    if RATING_JUDGE not in judges:
        judges.append(RATING_JUDGE)
    clash = [name for name in extra if name in POLICIES]
    if clash:
        raise ValueError(f"extra policy names {', '.join(map(repr, clash))} are taken by the course's policies: "
                         f"pick other names.")
    ws.require("sft"), ws.require("reward")
    status = policy_status(ws, policies)
    missing = {n: {"problem": s["problem"], "command": s["command"]} for n, s in status.items() if not s["ready"]}
    names = [n for n, s in status.items() if s["ready"]] + list(extra)
    if REFERENCE not in names:
        names.insert(0, REFERENCE)
    ai_judge = _ai_judge(judges)
    if "ai" in judges and ai_judge is None:
        judges.remove("ai")

    held = heldout_prompts(ws)
    prompts_once = distinct_heldout_prompts(ws)
    if samples_per_prompt is None:                  # as many answers as labs 05-07 measure: 4 per held-out prompt
        samples_per_prompt = max(1, 4 * len(held) // len(prompts_once))
    if samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt must be at least 1, got {samples_per_prompt}.")
    prompts = [p for p in prompts_once for _ in range(samples_per_prompt)]
    scorer = RewardScorer(ws.require("reward"))
    pages = heldout_pages(ws.seed, ws.preset.n_heldout)
    sft, sft_tok = _load(ws, REFERENCE, extra)
    results, taxes = {}, {}
    for name in _progress(names, progress):
        model, tok = (sft, sft_tok) if name in (REFERENCE, "best-of-4") else _load(ws, name, extra)
        if name == "best-of-4":
            results[name] = best_of_n_policy(ws, model, tok, scorer, prompts_once, samples_per_prompt)
        else:
            results[name] = measure_policy(ws, model, tok, sft, sft_tok, scorer, prompts)
        taxes[name] = page_loss(model, tok, pages, ws.preset.n_positions) if same_tokenizer(tok, sft_tok) else None
    base_loss = taxes.get("base")
    if base_loss is None and ws.is_done("base"):        # base left off the board: still the tax's zero
        base_loss = page_loss(*_load(ws, "base", {}), pages, ws.preset.n_positions)

    matches, position = judge_matches(results, len(prompts_once), judges, ai_judge, ws.seed)
    win_rate_fn = win_rate_fn or ratings.win_rate
    ratings_fn = ratings_fn or ratings.bradley_terry_ratings
    distinct_fn = distinct_fn or ratings.distinct_n
    anchor = names.index(REFERENCE)
    point = ratings_fn(matches.table(RATING_JUDGE), len(names), anchor=anchor)
    _, low, high = ratings.rating_intervals(matches.table(RATING_JUDGE), matches.prompt, len(names), anchor=anchor,
                                            n_boot=n_boot, seed=ws.seed)
    by_judge = {j: dict(zip(names, ratings.bradley_terry_ratings(matches.table(j), len(names), anchor=anchor)
                            .tolist())) for j in matches.outcomes}
    win_rates, length_controlled = {}, {}
    for judge in matches.outcomes:
        win_rates[judge], length_controlled[judge] = {}, {}
        for name in names:
            if name == REFERENCE:
                continue
            y = matches.between(name, REFERENCE, judge)
            win_rates[judge][name] = [round(float(v), 4) for v in win_rate_fn(y, torch.full_like(y, 0.5),
                                                                              seed=ws.seed)]
            lengths = [torch.tensor([r["length"] for r in results[n]["samples"]], dtype=torch.float32)
                       for n in (name, REFERENCE)]
            lc = ratings.length_controlled_win_rate(y.reshape(-1), torch.full((y.numel(),), 0.5), *lengths)
            length_controlled[judge][name] = {k: round(float(v), 4) for k, v in lc.items()}

    rows = {}
    for i, name in enumerate(names):
        r = results[name]
        tax = taxes.get(name)
        rows[name] = {
            "rating": round(float(point[i]), 4), "rating_ci": [round(float(low[i]), 4), round(float(high[i]), 4)],
            "elo": round(float(ratings.elo(point[i:i + 1])[0]), 1),
            "gold": round(r["gold"], 4), "proxy": round(r["proxy"], 4),
            "kl": None if r["kl"] is None else round(r["kl"], 4),
            "length": round(sum(s["length"] for s in r["samples"]) / len(r["samples"]), 2),
            "format_rate": round(r["format_rate"], 4),
            "distinct_2": round(float(distinct_fn([s["response"] for s in r["samples"]], 2)), 4),
            "alignment_tax": None if tax is None or base_loss is None else round(tax - base_loss, 4),
            "win_rate_vs_sft": win_rates[RATING_JUDGE].get(name),
            "stage": POLICIES[name][0] if name in POLICIES else str(extra[name]),
        }
    return {"policies": rows, "win_rates": win_rates, "length_controlled": length_controlled,
            "ratings_by_judge": {j: {n: round(v, 4) for n, v in r.items()} for j, r in by_judge.items()},
            "judge_agreement": judge_agreement(matches), "position_bias": position,
            "proxy_up_gold_down": proxy_gold_disagreements(rows), "missing": missing,
            "judges": list(matches.outcomes), "samples_per_prompt": samples_per_prompt,
            "n_prompts": len(prompts_once), "base_page_loss": None if base_loss is None else round(base_loss, 4),
            "samples": {n: results[n]["samples"] for n in names}, "matches": matches,
            "seconds": round(time.perf_counter() - started, 2)}


def _ai_judge(judges):
    if "ai" not in judges:
        return None
    from .judge import load_judge
    from .models import PackagedModelError

    try:
        return load_judge()
    except PackagedModelError as error:
        print(f"The AI judge is left out: {error}", flush=True)
        return None


def _progress(items, on: bool):
    from tqdm.auto import tqdm

    return tqdm(items, desc="measuring policies", leave=False, disable=not on)


# ------------------------------------------------------------------------------------------- tables and export
def leaderboard_frame(board: dict):
    """The leaderboard as a pandas DataFrame, one row per policy, sorted by gold (best first); then one row per
    missing policy, empty but for its "note": why it is missing and the command that builds it."""
    import pandas as pd

    rows = []
    for name, r in board["policies"].items():
        rows.append({"policy": name, "rating": r["rating"], "rating low": r["rating_ci"][0],
                     "rating high": r["rating_ci"][1], "gold": r["gold"], "proxy": r["proxy"], "kl": r["kl"],
                     "length": r["length"], "format_rate": r["format_rate"], "distinct_2": r["distinct_2"],
                     "alignment_tax": r["alignment_tax"],
                     "win_vs_sft": None if r["win_rate_vs_sft"] is None else r["win_rate_vs_sft"][0],
                     "note": "" if r["kl"] is not None else "another tokenizer: KL and alignment tax not comparable"})
    frame = pd.DataFrame(rows).set_index("policy").sort_values("gold", ascending=False)
    for name, m in board["missing"].items():     # the table says what is missing, and what builds it
        frame.loc[name] = [None] * (len(frame.columns) - 1) + [f"{m['problem']}: run `{m['command']}`"]
    return frame


def missing_frame(board: dict):
    """The policies not on the board: why, and the command that builds each."""
    import pandas as pd

    return pd.DataFrame([{"policy": n, **m} for n, m in board["missing"].items()],
                        columns=["policy", "problem", "command"]).set_index("policy")


def win_rate_frame(board: dict, length_controlled: bool = False):
    """Win rate against SFT, one column per judge (with its 95% interval as "rate [low, high]"), or the
    length-controlled one beside the raw one."""
    import pandas as pd

    if length_controlled:
        return pd.DataFrame({f"{j} {k}": {n: v[k] for n, v in per.items()}
                             for j, per in board["length_controlled"].items() for k in ("win_rate", "lc_win_rate")})
    return pd.DataFrame({j: {n: f"{v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]" for n, v in per.items()}
                         for j, per in board["win_rates"].items()})


def interval_widths(board: dict, judge: str = RATING_JUDGE, win_rate_fn: Callable | None = None):
    """For each policy against SFT by `judge`: the win rate and the width of its 95% interval from a bootstrap over
    instructions (right) and over single answers (as if each answer were its own instruction), and their ratio.
    A pandas DataFrame, one row per policy. `win_rate_fn`: the learner's `win_rate` (default the kit's)."""
    import pandas as pd
    import torch

    from . import ratings

    win_rate_fn = win_rate_fn or ratings.win_rate
    rows = {}
    for name in board["policies"]:
        if name == REFERENCE:
            continue
        y = board["matches"].between(name, REFERENCE, judge)
        half = torch.full_like(y, 0.5)
        rate, low, high = win_rate_fn(y, half)
        _, low_a, high_a = win_rate_fn(y.reshape(-1, 1), half.reshape(-1, 1))
        rows[name] = {"win rate": rate, "width, instructions": high - low, "width, answers": high_a - low_a,
                      "ratio": (high - low) / max(high_a - low_a, 1e-9)}
    return pd.DataFrame(rows).T


def summary_json(board: dict) -> dict:
    """What `rlhf-kit eval --json` prints: the board without samples and matches."""
    return {k: v for k, v in board.items() if k not in ("samples", "matches")}


def markdown_table(frame) -> str:
    """A DataFrame as a Markdown table (what a learner pastes into a write-up), index first, None/NaN empty."""
    import math

    def cell(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    header = [frame.index.name or ""] + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([str(name)] + [cell(v) for v in row]) + " |"
              for name, row in zip(frame.index, frame.itertuples(index=False))]
    return "\n".join(lines) + "\n"


def _figure_png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def export(board: dict, out_dir=None, ws=None) -> dict[str, Path]:
    """Write the leaderboard as leaderboard.csv and leaderboard.md, the whole board as leaderboard.json, and a
    one-page report.html (the tables and the figure) to `out_dir` (default `<workspace>/leaderboard`).
    Returns {"csv", "md", "json", "html"}: the paths."""
    from .ui.plots import leaderboard_plot

    if out_dir is None:
        if ws is None:
            raise ValueError("export() needs out_dir or ws (then it writes to <workspace>/leaderboard).")
        out_dir = ws.root / "leaderboard"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = leaderboard_frame(board).round(3)
    paths = {"csv": out_dir / "leaderboard.csv", "md": out_dir / "leaderboard.md", "json": out_dir / "leaderboard.json",
             "html": out_dir / "report.html"}
    frame.to_csv(paths["csv"])
    paths["md"].write_text(markdown_table(frame))
    paths["json"].write_text(json.dumps(summary_json(board), indent=1, default=_plain) + "\n")
    image = _figure_png(leaderboard_plot(board).figure)
    missing = missing_frame(board)
    paths["html"].write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>RLHF leaderboard</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
        "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}</style></head><body>"
        f"<h1>Leaderboard</h1><p>{board['n_prompts']} held-out instructions x {board['samples_per_prompt']} "
        f"samples per policy; rating: Bradley-Terry on the {RATING_JUDGE}'s verdicts, SFT = 0, 95% bootstrap "
        f"interval over instructions; sorted by gold.</p>{frame.to_html()}"
        f"<img alt='leaderboard figure' src='data:image/png;base64,{image}' style='max-width:100%'>"
        f"<h2>Win rate against SFT</h2>{win_rate_frame(board).to_html()}"
        f"<h2>Judge agreement</h2>{_agreement_html(board)}"
        f"<p>Proxy up, gold down (reward hacking): {', '.join(board['proxy_up_gold_down']) or 'none'}.</p>"
        + (f"<h2>Not on the board</h2>{missing.to_html()}" if len(missing) else "") + "</body></html>\n")
    return paths


def _agreement_html(board: dict) -> str:
    import pandas as pd

    return pd.DataFrame(board["judge_agreement"]).to_html()


def _plain(value):
    return value.tolist() if hasattr(value, "tolist") else str(value)
