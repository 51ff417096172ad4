"""The README's seed table from release runs of the course, and the typical figures the notebooks print.

    for s in 0 1 2; do .venv/bin/rlhf-kit course --preset lab --seed $s --json | tail -1 > course-seed$s.json; done
    .venv/bin/python scripts/seed_table.py course-seed0.json course-seed1.json course-seed2.json

prints a markdown table (one column per seed, then mean and spread = max - min) of every lab's headline figures
and per-lab wall times, and writes rlhf_kit/typical_figures.json, which `rlhf_kit.course.record` reads to print
a learner's figures beside the typical ones.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rlhf_kit.course import TYPICAL_FILE


def main(paths: list[str]) -> None:
    runs = [json.loads(Path(p).read_text().strip().splitlines()[-1]) for p in paths]
    presets = {run["preset"] for run in runs}
    if len(presets) != 1:
        raise SystemExit(f"the runs mix presets {sorted(presets)}; give runs of one preset")
    preset = presets.pop()
    seeds = [run["seed"] for run in runs]
    labs: dict[str, dict[str, list]] = {}
    for run in runs:
        for row in run["labs"]:
            for key, value in row["figures"].items():
                labs.setdefault(row["lab"], {}).setdefault(key, []).append(value)
            labs.setdefault(row["lab"], {}).setdefault("minutes", []).append(round(row["seconds"] / 60, 1))
    stored = json.loads(TYPICAL_FILE.read_text()) if TYPICAL_FILE.is_file() else {}
    stored[preset] = {"seeds": seeds, "labs": {lab: {k: v for k, v in figures.items() if k != "minutes"}
                                               for lab, figures in labs.items()}}
    TYPICAL_FILE.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")

    print("| lab | figure | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | spread |")
    print("|---|---|" + "---|" * (len(seeds) + 2))
    for lab in sorted(labs):
        for key, values in labs[lab].items():
            numbers = [v for v in values if isinstance(v, (int, float))]
            cells = " | ".join(_fmt(v) for v in values)
            if len(numbers) == len(values) == len(seeds):
                mean, spread = sum(numbers) / len(numbers), max(numbers) - min(numbers)
                print(f"| {lab} | {key} | {cells} | {_fmt(mean)} | {_fmt(spread)} |")
            else:
                print(f"| {lab} | {key} | {cells} | | |")
    def outcome(run) -> str:
        failed = [r["lab"] for r in run["labs"] if not r["passed"]]
        return "all passed" if not failed else "FAILED " + ", ".join(failed)

    passed = ", ".join(f"seed {run['seed']}: {outcome(run)}" for run in runs)
    print(f"\n{passed}; total minutes: " + ", ".join(f"{run['seconds'] / 60:.1f}" for run in runs))


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main(sys.argv[1:])
