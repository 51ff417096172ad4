"""Seconds from pressing Run in lab 04's playground to its first redrawn curve, and where they go.

    python bench/playground.py --preset lab [--repeats 3] [--json]

The playground of lab 04 (`rlhf_kit.ui.Playground`) on the workspace's SFT policy and reward model (built if
missing), driven from code as the Run button drives it: each repeat is one run of one step, `run_sync(steps=1)`.
`Run.first_curve_seconds` is measured by the playground itself, from the press to the dashboard redrawn with the
run's first step; the browser test (tests/test_browser.py) prints the same figure measured from the click in
JupyterLab. The split: building a fresh trainer (loading the policy, reference, value and reward models), the
first PPO step, and drawing the dashboard (the rest). Medians over `--repeats` runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from rlhf_kit.presets import PRESETS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=list(PRESETS), default="ci", help="run size (default: ci)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs, after one warm-up run (default: 3)")
    parser.add_argument("--workspace", default=None, help="workspace home (default: $RLHF_KIT_HOME or ./workspace)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object on the last line")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        print("--repeats must be >= 1", file=sys.stderr)
        return 2
    from rlhf_kit.ppo import PPOTrainer
    from rlhf_kit.ui.playground import Playground
    from rlhf_kit.workspace import Workspace

    ws = Workspace(args.preset, home=args.workspace, seed=args.seed)
    ws.ensure("reward")
    last = {}                                       # phase: seconds of its latest call

    def timed(phase, inner):
        def call(*a, **k):
            started = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                last[phase] = time.perf_counter() - started
        return call

    playground = Playground(ws, trainer_factory=timed("build", PPOTrainer.from_workspace))
    playground._draw = timed("draw", playground._draw)
    first, builds, draws = [], [], []
    for i in range(1 + args.repeats):
        run = playground.run_sync(steps=1)
        if run is None or run.status != "finished":
            print(f"the run did not finish: {playground.status.value}", file=sys.stderr)
            return 1
        if i > 0:                                   # the first draw after the step is the last draw of a 1-step run
            first.append(run.first_curve_seconds)
            builds.append(last["build"])
            draws.append(last["draw"])
    result = {"preset": args.preset, "repeats": args.repeats,
              "first_curve_seconds": round(statistics.median(first), 3),
              "build_seconds": round(statistics.median(builds), 3),
              "draw_seconds": round(statistics.median(draws), 3)}
    result["step_and_rest_seconds"] = round(result["first_curve_seconds"] - result["build_seconds"]
                                            - result["draw_seconds"], 3)
    print(f"preset {args.preset}: first curve {result['first_curve_seconds']:.2f} s after Run (median of "
          f"{args.repeats}): building the trainer {result['build_seconds']:.2f} s, first PPO step and the rest "
          f"{result['step_and_rest_seconds']:.2f} s, drawing the dashboard {result['draw_seconds']:.2f} s")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
