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
    # Runs of the same seed are merged, a later run's lab replacing an earlier one's (e.g. `--labs 06` run after
    # the whole course), so a lab added later needs only its own runs; a lab without a run for some seed has a
    # blank cell there, and its typical figures are over the seeds that ran it.
    by_seed: dict[int, dict[str, dict]] = {}
    for run in runs:
        by_seed.setdefault(run["seed"], {}).update({row["lab"]: row for row in run["labs"]})
    seeds = sorted(by_seed)
    labs: dict[str, dict[str, dict[int, object]]] = {}
    for seed, rows in by_seed.items():
        for lab, row in rows.items():
            figures = {**row["figures"], "minutes": round(row["seconds"] / 60, 1)}
            for key, value in figures.items():
                labs.setdefault(lab, {}).setdefault(key, {})[seed] = value
    lab_seeds = {lab: sorted(seed for seed in seeds if lab in by_seed[seed]) for lab in labs}
    stored = json.loads(TYPICAL_FILE.read_text()) if TYPICAL_FILE.is_file() else {}
    stored[preset] = {"seeds": seeds, "lab_seeds": {lab: s for lab, s in lab_seeds.items() if s != seeds},
                      "labs": {lab: {k: [v[s] for s in sorted(v)] for k, v in figures.items() if k != "minutes"}
                               for lab, figures in labs.items()}}
    TYPICAL_FILE.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")

    print("| lab | figure | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | spread |")
    print("|---|---|" + "---|" * (len(seeds) + 2))
    for lab in sorted(labs):
        for key, values in labs[lab].items():
            numbers = [v for v in values.values() if isinstance(v, (int, float))]
            cells = " | ".join(_fmt(values[s]) if s in values else "" for s in seeds)
            if len(numbers) == len(values) >= 2:
                mean, spread = sum(numbers) / len(numbers), max(numbers) - min(numbers)
                print(f"| {lab} | {key} | {cells} | {_fmt(mean)} | {_fmt(spread)} |")
            else:
                print(f"| {lab} | {key} | {cells} | | |")

    def outcome(rows) -> str:
        failed = [lab for lab, row in rows.items() if not row["passed"]]
        return "all passed" if not failed else "FAILED " + ", ".join(failed)

    print("\n" + ", ".join(f"seed {seed}: {outcome(by_seed[seed])}" for seed in seeds) + "; total minutes: "
          + ", ".join(f"{sum(row['seconds'] for row in by_seed[seed].values()) / 60:.1f}" for seed in seeds))


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main(sys.argv[1:])
