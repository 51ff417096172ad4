"""`rlhf-kit`: the command line. Training subcommands share --preset/--workspace/--seed/--json; with --json the
last line printed is one JSON object of the stage's metrics (progress bars go to stderr)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from typing import Callable

from .configs import DPO_LOSSES
from .leaderboard import JUDGES, POLICIES
from .presets import PRESETS
from .workspace import STAGES, Workspace, WorkspaceError, check_seed

# subcommand -> (workspace stage it (re)builds, help)
TRAINING = {
    "pretrain": ("base", "build the toy world if needed, train the tokenizer and pretrain the tiny base model"),
    "sft": ("sft", "fine-tune the base model on demonstrations; report gold reward and format rate before/after"),
    "collect": ("preferences", "sample candidate pairs from the SFT policy and label them (--simulated: autopilot)"),
    "reward": ("reward", "train the Bradley-Terry reward model; report held-out and gold accuracy"),
    "ppo": ("ppo", "PPO from the SFT policy against the reward model; report gold and proxy reward before/after "
                   "on held-out prompts, and the KL"),
    "dpo": ("dpo", "DPO from the SFT policy on the preference pairs; report gold and proxy reward before/after on "
                   "held-out prompts, the KL, and the implicit reward model's accuracy on held-out pairs"),
    "grpo": ("grpo", "GRPO or RLOO (PPO without a value model: group-relative advantages) from the SFT policy; "
                     "report what `ppo` reports, and the group size"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlhf-kit", description="The RLHF Lab Kit.")
    sub = parser.add_subparsers(dest="command", required=True)

    doctor = sub.add_parser("doctor", help="check the environment and print a table")
    doctor.add_argument("--workspace", help="workspace home (default: $RLHF_KIT_HOME or ./workspace)")

    labs = sub.add_parser("build-labs", help="generate labs/*.ipynb from solutions/*.ipynb")
    labs.add_argument("--check", action="store_true", help="exit 1 if labs/ is out of date; write nothing")
    labs.add_argument("--solutions", default="solutions")
    labs.add_argument("--labs", default="labs")

    for name, (_, text) in TRAINING.items():
        _add_run_options(sub.add_parser(name, help=text))
    collect = sub.choices["collect"]
    collect.add_argument("--simulated", action="store_true",
                         help="let the simulated annotator label the pairs (people label in lab 02's widget)")
    collect.add_argument("--pairs", type=int, default=None, help="number of pairs (default: the preset's; with "
                                                                "--judge, the first N of the stage's pairs)")
    collect.add_argument("--judge", choices=["ai"], default=None,
                         help="label the stage's pairs with an AI judge against a constitution (lab 07) into "
                              "labels/ai-<model>.jsonl, resuming where an earlier run stopped")
    collect.add_argument("--judge-model", default="all-minilm-l6-v2",
                         choices=["all-minilm-l6-v2", "smollm2-135m-instruct"],
                         help="the judge's model (default: all-minilm-l6-v2, about 20 s per 1000 pairs on a laptop "
                              "CPU; smollm2-135m-instruct takes about 15 minutes)")
    build = sub.add_parser("build", help="build one workspace stage (and what it needs), e.g. hacked (PPO at beta 0), "
                                         "ai-reward or grpo-ai, which lab 08 ranks")
    build.add_argument("stage", help="the stage: " + ", ".join(STAGES))
    _add_run_options(build)
    evaluate = sub.add_parser("eval", help="rank every policy built in this workspace on one leaderboard (lab 08): "
                                           "rating with its 95%% interval, gold, proxy, KL, length, diversity, "
                                           "alignment tax, win rate against SFT")
    _add_run_options(evaluate)
    evaluate.add_argument("--policies", default=None, help="comma-separated, from: " + ", ".join(POLICIES)
                          + " (default: all; the missing ones are listed with the command that builds them)")
    evaluate.add_argument("--judges", default=None, help="comma-separated, from: " + ", ".join(JUDGES)
                          + " (default: all; the labeller is always used, for the rating)")
    evaluate.add_argument("--samples", type=int, default=None,
                          help="answers per held-out instruction (default: 4 per held-out prompt, as labs 05-07)")
    course = sub.add_parser("course", help="run every solutions notebook in order in one workspace; print each "
                                           "lab's time, pass/fail and headline figures")
    _add_run_options(course)
    course.add_argument("--labs", default=None, metavar="RANGE", help="which labs, e.g. 00-05 or 01,03 "
                                                                      "(default: all)")
    course.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="give up on a cell after S seconds (default: no limit)")
    ppo = sub.choices["ppo"]
    ppo.add_argument("--beta", type=float, default=None, help="KL coefficient (default: the preset's)")
    ppo.add_argument("--clip-eps", type=float, default=None, help="PPO ratio clip (default: the preset's)")
    ppo.add_argument("--steps", type=int, default=None, help="PPO steps (default: the preset's)")
    ppo.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    ppo.add_argument("--save", default=None, metavar="DIR", help="also copy the trained policy (the workspace's "
                                                                "ppo stage) to DIR")
    grpo = sub.choices["grpo"]
    for flag in ("--beta", "--clip-eps", "--steps", "--lr"):
        grpo.add_argument(flag, type=int if flag == "--steps" else float, default=None,
                          help=f"as `rlhf-kit ppo {flag}` (default: the preset's)")
    grpo.add_argument("--group-size", type=int, default=None, help="responses per prompt (default: the preset's)")
    grpo.add_argument("--estimator", choices=["grpo", "rloo"], default="grpo",
                      help="grpo: reward minus its group's mean, over its std, KL in the loss; rloo: minus the mean "
                           "of the other responses to its prompt, KL in the reward")
    grpo.add_argument("--reward", choices=["rm", "verifier"], default="rm",
                      help="rm: the workspace's reward model; verifier: a program checking format, topic and length")
    for name in ("sft", "reward", "ppo", "grpo", "dpo"):
        sub.choices[name].add_argument("--lora-rank", type=int, default=None,
                                       help="train LoRA adapters of this rank instead of every weight (a policy's "
                                            "reference is then itself with its adapters off); the adapters are merged "
                                            "into the saved weights; default 0: every weight")
    dpo = sub.choices["dpo"]
    dpo.add_argument("--beta", type=float, default=None, help="implicit-reward scale (default: the preset's)")
    dpo.add_argument("--loss", choices=DPO_LOSSES, default=None, help="sigmoid (DPO) or ipo (default: sigmoid)")
    dpo.add_argument("--epochs", type=int, default=None, help="passes over the pairs (default: the preset's)")
    dpo.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    return parser


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """--preset/--workspace/--seed/--json, shared by the training subcommands."""
    p.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="run size (default: $RLHF_KIT_PRESET or lab)")
    p.add_argument("--workspace", default=None, help="workspace home (default: $RLHF_KIT_HOME or ./workspace)")
    p.add_argument("--seed", type=int, default=None, help="the workspace's seed (default: $RLHF_KIT_SEED or 0)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object on the last line")


def _print_metrics(metrics: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(metrics))
    else:
        for key, value in metrics.items():
            print(f"{key:>22}: {value}")


PPO_FLAGS = {"beta": "--beta", "clip_eps": "--clip-eps", "steps": "--steps", "lr": "--lr", "lora_rank": "--lora-rank"}
DPO_FLAGS = {"beta": "--beta", "loss": "--loss", "epochs": "--epochs", "lr": "--lr", "lora_rank": "--lora-rank"}
GRPO_FLAGS = {**PPO_FLAGS, "group_size": "--group-size"}
LORA_FLAGS = {"lora_rank": "--lora-rank"}     # sft and reward


def _config_options(args, ws, config_cls, flags: dict, make: Callable | None = None) -> dict:
    """The config fields the flags override, checked before anything is built (the config names a bad value;
    the error starts with the flag that set it). `make(**overrides)` builds the config (default: from_preset)."""
    overrides = {key: getattr(args, key) for key in flags if getattr(args, key) is not None}
    try:
        (make or (lambda **kw: config_cls.from_preset(ws.preset, ws.seed, **kw)))(**overrides)
    except ValueError as error:
        name = config_cls.__name__
        used = [f"{flags[key]} {overrides[key]}" for key in overrides if f"{name}.{key}" in str(error)]
        raise ValueError(f"{', '.join(used)}: {error}" if used else str(error)) from None
    return overrides


def _build_ppo(ws, overrides: dict, stage: str = "ppo") -> None:
    """The ppo (or grpo) stage; a run that diverges (NaN reward or loss) is reported like any other error: exit
    status 2."""
    from .ppo import PPODiverged

    try:
        ws.build(stage, **overrides)
    except PPODiverged as error:
        raise ValueError(str(error)) from error


def _collect_with_judge(args, ws) -> int:
    """`rlhf-kit collect --judge ai`: the `preferences` stage's pairs labelled by the judge (judge.ai_label). The
    judge's package is checked before anything is built or loaded."""
    from .judge import ai_label, check_judge, load_judge

    check_judge(args.judge_model)
    ws.ensure("preferences")
    _print_metrics(ai_label(ws, load_judge(args.judge_model), n_pairs=args.pairs), args.json)
    return 0


def _course(args) -> int:
    """`rlhf-kit course`: exit status 0 when every lab passed, 1 otherwise."""
    from .course import parse_labs, run_course
    from .workspace import default_home, default_seed, home_problem

    seed = default_seed() if args.seed is None else check_seed(args.seed, "--seed")
    labs = parse_labs(args.labs) if args.labs else None
    problem = home_problem(args.workspace or default_home())
    if problem:
        raise WorkspaceError(problem)
    result = run_course(args.preset, seed, labs, home=args.workspace, timeout=args.timeout,
                        progress=lambda line: print(line, file=sys.stderr if args.json else sys.stdout, flush=True))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{'all labs passed' if result['passed'] else 'some labs FAILED'} in {result['seconds']:.0f} s; "
              f"workspace {result['workspace']}")
    return 0 if result["passed"] else 1


def _names(text: str | None, known, flag: str) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if not names or unknown:
        raise ValueError(f"{flag}: unknown {', '.join(map(repr, unknown)) or 'empty list'}; choose from "
                         f"{', '.join(known)}.")
    return names


def _eval(args, ws) -> int:
    """`rlhf-kit eval`: the leaderboard of what exists; nothing is built but the missing policies are listed."""
    from .leaderboard import export, leaderboard, leaderboard_frame, summary_json

    policies = _names(args.policies, POLICIES, "--policies")
    judges = _names(args.judges, JUDGES, "--judges")
    if args.samples is not None and args.samples < 1:
        raise ValueError(f"--samples must be at least 1, got {args.samples}.")
    board = leaderboard(ws, policies, judges, samples_per_prompt=args.samples, progress=not args.json)
    paths = export(board, ws=ws)
    summary = summary_json(board)
    if args.json:
        print(json.dumps({**summary, "files": {k: str(v) for k, v in paths.items()}}))
    else:
        print(leaderboard_frame(board).to_string())
        print(f"written: {', '.join(str(p) for p in paths.values())}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "doctor":
            from . import doctor

            return doctor.main(args.workspace)
        if args.command == "build-labs":
            from .notebooks import build_labs

            changed = build_labs(args.solutions, args.labs, check=args.check)
            if args.check and changed:
                print("labs/ is out of date with solutions/: " + ", ".join(changed)
                      + ". Run `rlhf-kit build-labs`.", file=sys.stderr)
                return 1
            print(("stale: " if args.check else "wrote: ") + (", ".join(changed) or "nothing"))
            return 0
        if args.command == "course":
            return _course(args)
        ws = Workspace(args.preset, args.workspace, None if args.seed is None else check_seed(args.seed, "--seed"))
        ws.check_home()
        if args.command == "eval":
            return _eval(args, ws)
        if args.command == "build":
            if args.stage not in STAGES:
                raise ValueError(f"unknown stage {args.stage!r}; the stages are: {', '.join(STAGES)}.")
            ws.build(args.stage)
            _print_metrics(ws.metrics(args.stage), args.json)
            return 0
        stage = TRAINING[args.command][0]
        options = {}
        if args.command == "collect":
            if args.simulated and args.judge:
                raise ValueError("--simulated and --judge are two different labellers: give one of them.")
            if not args.simulated and not args.judge:
                raise ValueError("on the command line only the simulated annotator (--simulated) or an AI judge "
                                 "(--judge ai) can label. To label by hand, open lab 02; to label as a class, "
                                 "serve it with Voila (README).")
            if args.pairs is not None and args.pairs < 1:
                raise ValueError(f"--pairs must be at least 1, got {args.pairs}.")
            if args.judge:
                return _collect_with_judge(args, ws)
            options["n_pairs"] = args.pairs
        if args.command == "ppo":
            from .configs import PPOConfig

            _build_ppo(ws, _config_options(args, ws, PPOConfig, PPO_FLAGS))
        elif args.command == "grpo":
            from .configs import PPOConfig
            from .grpo import grpo_config

            overrides = _config_options(args, ws, PPOConfig, GRPO_FLAGS,
                                        lambda **kw: grpo_config(ws, args.estimator, **kw))
            _build_ppo(ws, {**overrides, "estimator": args.estimator, "reward": args.reward}, stage="grpo")
        elif args.command == "dpo":
            from .configs import DPOConfig

            ws.build("dpo", **_config_options(args, ws, DPOConfig, DPO_FLAGS))
        elif args.command in ("sft", "reward"):
            from .configs import RewardConfig, SFTConfig

            config_cls = SFTConfig if args.command == "sft" else RewardConfig
            ws.build(stage, **_config_options(args, ws, config_cls, LORA_FLAGS))
        else:
            ws.build(stage, **options)
        if getattr(args, "save", None):
            shutil.copytree(ws.path(stage), args.save, dirs_exist_ok=True)
        _print_metrics(ws.metrics(stage), args.json)
        return 0
    except (ValueError, WorkspaceError, FileNotFoundError) as error:
        print(f"rlhf-kit {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
