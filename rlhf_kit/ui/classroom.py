"""Classroom pooling: a room of students labels the same pairs, each into their own file, and the instructor pools them.

    ClassroomCollector(labels_dir, pairs)    # a student types their name, presses Start, labels
    pool(labels_dir)                         # the instructor: who labelled what, how much they agree

`scripts/classroom.sh` serves `classroom/collect.ipynb` with Voila as a standalone page (no code, no JupyterLab):
every page load gets its own kernel, so each student has their own widget. A name becomes the file
`labels_dir/<name>.jsonl`, a `rlhf_kit.preferences.PreferenceStore` that the `PreferenceCollector` fsyncs each
click to. Typing the same name again (after a reload, or on another machine) reopens that file and carries on
after the pairs already labelled; the match ignores upper/lower case and Unicode spelling variants, so "alice"
resumes "Alice", from the moment "Alice" pressed Start (the file is created then, under a lock on the folder).

Names may be written in any script (Devanagari, Yoruba with its tone marks, ...): they are NFKC-normalised, and
letters, digits and combining marks are kept; path separators, '..' and control characters are refused.

One page at a time labels under a name (`rlhf_kit.ui.claims`): another page asking for it is told it is in use
and may take it over, after which the first page's clicks are refused (never half-saved). A page whose kernel
died (killed, culled) leaves its name free.

The notebook reads its inputs from the environment (see `classroom_pairs`, `classroom_dir`, `classroom_budget`):

    RLHF_KIT_CLASSROOM_PAIRS   a JSONL file of pairs {"pair_id", "prompt", "response_a", "response_b"}; without
                               it, the `preferences` stage of the workspace ($RLHF_KIT_PRESET, $RLHF_KIT_HOME)
    RLHF_KIT_CLASSROOM_DIR     where the students' files go; default <workspace root>/classroom
    RLHF_KIT_CLASSROOM_BUDGET  how many pairs each student labels; default all of them

Everyone gets the pairs in the same order, so with a budget every student labels the same first pairs and the
agreement numbers of `pool` compare as many shared pairs as possible.

Run `python -m rlhf_kit.ui.classroom DIR` to print `pool(DIR)` as JSON (files it cannot read are listed on stderr).
"""

from __future__ import annotations

import atexit
import html
import itertools
import json
import math
import os
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import ipywidgets as widgets

from ..preferences import CHOICES, PreferenceStore, kappa_between, majority_vote, merge, pairwise_agreement
from .claims import NameClaim, name_key, names_locked
from .collector import PreferenceCollector

PAIRS_ENV, DIR_ENV, BUDGET_ENV = "RLHF_KIT_CLASSROOM_PAIRS", "RLHF_KIT_CLASSROOM_DIR", "RLHF_KIT_CLASSROOM_BUDGET"
PAIR_KEYS = ("pair_id", "prompt", "response_a", "response_b")
MAX_NAME = 40
NAME_RULE = (f"Use letters of any script (with their accents and marks), digits, '-', '_' and '.' (spaces become "
             f"'-'), starting with a letter or a digit, at most {MAX_NAME} characters.")
_JOINERS = "\u200c\u200d"     # zero-width non-joiner and joiner: part of how some Indic names are spelt


def _name_char(c: str) -> bool:
    return c.isalnum() or c in "-_." or c in _JOINERS or unicodedata.category(c).startswith("M")


def clean_name(text: str) -> tuple[str | None, str]:
    """(name, "") for a usable student name, else (None, why not). The text is NFKC-normalised (so the same name
    typed two ways gives the same file) and whitespace runs become '-'; letters and combining marks of any script
    are kept; path separators, '..' and control characters are refused."""
    name = re.sub(r"\s+", "-", unicodedata.normalize("NFKC", text or "").strip())
    if not name:
        return None, "Type your name first: your labels are saved in a file with that name."
    separators = sorted({c for c in name if c in "/\\"})
    if separators:
        return None, (f"A name cannot contain {' '.join(repr(c) for c in separators)}: it would point outside the "
                      f"class folder. {NAME_RULE}")
    control = sorted({c for c in name if unicodedata.category(c).startswith("C") and c not in _JOINERS})
    if control:
        codes = ", ".join(f"U+{ord(c):04X}" for c in control)
        return None, f"A name cannot contain invisible control characters ({codes}): retype it. {NAME_RULE}"
    if ".." in name:
        return None, f"A name cannot contain '..'. {NAME_RULE}"
    bad = sorted({c for c in name if not _name_char(c)})
    if bad:
        return None, f"A name cannot contain {' '.join(repr(c) for c in bad)}. {NAME_RULE}"
    if not name[0].isalnum():
        return None, f"{name!r} must start with a letter or a digit. {NAME_RULE}"
    if len(name) > MAX_NAME:
        return None, f"{name[:MAX_NAME]}... is {len(name)} characters long. {NAME_RULE}"
    return name, ""


class ClassroomCollector:
    """Name + Start, then a `PreferenceCollector` on `labels_dir/<name>.jsonl` with annotator=<name>, while this
    page holds the name's claim (`rlhf_kit.ui.claims`)."""

    def __init__(self, labels_dir, pairs: list[dict], budget: int | None = None, simulated=None):
        if not pairs:
            raise ValueError("ClassroomCollector needs at least one pair to label; got none")
        self.labels_dir = Path(labels_dir)
        self.pairs, self.budget, self.simulated = pairs, budget, simulated
        self.collector: PreferenceCollector | None = None
        self.claim: NameClaim | None = None

        self.name = widgets.Text(description="Your name", placeholder="e.g. Ada Lovelace")
        self.start_button = widgets.Button(description="Start", button_style="primary")
        self.start_button.on_click(lambda _: self.start())
        self.takeover_button = widgets.Button(description="Take it over", button_style="warning",
                                              layout=widgets.Layout(display="none"))
        self.takeover_button.on_click(lambda _: self.start(takeover=True))
        self.message = widgets.HTML("Type your name and press <b>Start</b>. Your labels are saved under it; "
                                    "come back with the same name to carry on where you left off.")
        self.area = widgets.VBox()
        self.widget = widgets.VBox([widgets.HTML("<h3>Which response is better?</h3>"),
                                    widgets.HBox([self.name, self.start_button, self.takeover_button]),
                                    self.message, self.area])
        for w, css in ((self.widget, "rk-classroom"), (self.name, "rk-classroom-name"),
                       (self.start_button, "rk-classroom-start"), (self.takeover_button, "rk-classroom-takeover"),
                       (self.message, "rk-classroom-message")):
            w.add_class(css)
        # Typing another name after "in use" offers Start again, not a takeover of the name shown before.
        self.name.observe(lambda _: self._offer_takeover(False) if self.collector is None else None, names="value")

    @property
    def annotator(self) -> str | None:
        """The name labels are saved under, once started."""
        return self.collector.annotator if self.collector is not None else None

    @property
    def path(self) -> Path | None:
        """This student's label file, once started."""
        return Path(self.collector.store.path) if self.collector is not None else None

    def _existing(self, name: str) -> str | None:
        """The name of a label file already in labels_dir that is `name` up to case and Unicode spelling."""
        if (self.labels_dir / f"{name}.jsonl").is_file():
            return name
        for path in sorted(self.labels_dir.glob("*.jsonl")):
            if name_key(path.stem) == name_key(name):
                return path.stem
        return None

    def _say(self, text: str, error: bool = False) -> None:
        text = html.escape(text, quote=False)
        self.message.value = f"<span style='color:#b00'>{text}</span>" if error else text

    def _offer_takeover(self, offer: bool) -> None:
        self.takeover_button.layout.display = None if offer else "none"

    def _claim(self, name: str, takeover: bool) -> tuple[str, NameClaim | None]:
        """Under the folder's lock: the file name for `name` (an existing spelling of it, else `name`) and this
        page's claim on it, None if another live page holds it (then the message says so). The label file is
        created here, so that a page pressing Start with "sam" a moment later finds "Sam"'s file."""
        self.labels_dir.mkdir(parents=True, exist_ok=True)
        with names_locked(self.labels_dir):
            name = self._existing(name) or name
            claim = NameClaim(self.labels_dir, name)
            held = claim.acquire(takeover=takeover)
            if held is not None:
                self._say(claim.in_use_message(held), error=True)
                return name, None
            (self.labels_dir / f"{name}.jsonl").touch()
        return name, claim

    def start(self, takeover: bool = False) -> PreferenceCollector | None:
        """Validate the name; if it is usable and no other page holds it (or `takeover`), open (or reopen) its file
        and show the collector. A name in use gets a message and the "Take it over" button."""
        if self.collector is not None:              # already labelling: one name per page
            return self.collector
        name, problem = clean_name(self.name.value)
        if name is None:
            self._say(problem, error=True)
            return None
        claim = None
        try:
            name, claim = self._claim(name, takeover)
            if claim is None:
                self._offer_takeover(True)
                return None
            store = PreferenceStore(self.labels_dir / f"{name}.jsonl")
            done = len(store.done_pair_ids(name) & {p["pair_id"] for p in self.pairs})
            collector = PreferenceCollector(store, self.pairs, annotator=name, budget=self.budget,
                                            settings={"classroom": True}, simulated=self.simulated,
                                            guard=claim.holding)
        except (OSError, ValueError) as e:           # unwritable folder, or a label file damaged by hand
            if claim is not None:
                claim.release()
            self._say(f"Cannot open the labels of {name}: {e} Ask your instructor.", error=True)
            return None
        self._show(collector, claim, done)
        return collector

    def _show(self, collector: PreferenceCollector, claim: NameClaim, done: int) -> None:
        """Fix the page to the started name and show its collector."""
        name = collector.annotator
        # The name is fixed for this page: labels typed under another name would land in this student's file.
        collector.name.disabled = True
        collector.name.observe(lambda change: setattr(collector.name, "value", name)
                               if change["new"] != name else None, names="value")
        self.collector, self.claim = collector, claim
        atexit.register(claim.release)              # the kernel exits: the name is free again
        self.name.value, self.name.disabled, self.start_button.disabled = name, True, True
        self._offer_takeover(False)
        welcome = (f"Welcome back, <b>{html.escape(name)}</b>: {done} already labelled, carrying on."
                   if done else f"Hello <b>{html.escape(name)}</b>.")
        self.message.value = (f"{welcome} Every click is saved in <code>{html.escape(str(collector.store.path))}"
                              f"</code>. To label under another name, reload the page.")
        self.area.children = (collector.widget,)

    def close(self) -> None:
        """Give up the name (what a closed page's kernel does on exit); the labels stay."""
        if self.claim is not None:
            self.claim.release()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


# --------------------------------------------------------------------------------------- the instructor
def pool(labels_dir) -> dict:
    """Pool every readable `*.jsonl` label file in `labels_dir` (with `rlhf_kit.preferences.merge`) and compare
    annotators. A file that cannot be read (damaged by hand, unreadable) is listed, not pooled: the rest still is.

        files        the label files, sorted
        unreadable   [{"file", "problem"}] for each file left out, with what is wrong with it
        annotators   everyone with at least one standing decision, sorted
        decisions    annotator -> {"A", "B", "tie", "skip", "total", "autopilot"}: standing decisions (undone
                     ones left out; autopilot = how many of them the simulated annotator made)
        agreement    one entry per pair of annotators: {"annotators": (a, b), "agreement", "n_agreement"} from
                     `pairwise_agreement` (A/B choices on shared pairs) and {"kappa", "n_kappa"} from
                     `kappa_between` (Cohen's kappa over shared A/B/tie labels); nan where nothing is shared
        mean_agreement, mean_kappa   over the annotator pairs that share something (nan if none)
        majority     pair_id -> the majority label (`majority_vote`)
        pooled       the pooled decisions themselves
    """
    labels_dir = Path(labels_dir)
    if not labels_dir.is_dir():
        raise FileNotFoundError(f"no classroom labels at {labels_dir}: it is created when the first student "
                                f"presses Start (see scripts/classroom.sh)")
    files = sorted(p for p in labels_dir.glob("*.jsonl") if not p.name.startswith("."))
    unreadable = []
    pooled = merge(files, unreadable)
    annotators = sorted({d["annotator"] for d in pooled})
    decisions = {}
    for a in annotators:
        mine = [d for d in pooled if d["annotator"] == a]
        counts = Counter(d["choice"] for d in mine)
        decisions[a] = {**{c: counts[c] for c in CHOICES}, "total": len(mine),
                        "autopilot": sum(bool(d.get("settings", {}).get("autopilot")) for d in mine)}
    agreement = []
    for a, b in itertools.combinations(annotators, 2):
        rate, n_rate = pairwise_agreement(pooled, a, b)
        kappa, n_kappa = kappa_between(pooled, a, b)
        agreement.append({"annotators": (a, b), "agreement": rate, "n_agreement": n_rate,
                          "kappa": kappa, "n_kappa": n_kappa})

    def mean(key):
        values = [row[key] for row in agreement if not math.isnan(row[key])]
        return sum(values) / len(values) if values else math.nan

    return {"files": files, "unreadable": [{"file": path, "problem": why} for path, why in unreadable],
            "annotators": annotators, "decisions": decisions, "agreement": agreement,
            "mean_agreement": mean("agreement"), "mean_kappa": mean("kappa"), "majority": majority_vote(pooled),
            "pooled": pooled}


# ------------------------------------------------------------------------------ the notebook's inputs
def read_pairs(path) -> list[dict]:
    """Pairs from a JSONL file, one {"pair_id", "prompt", "response_a", "response_b", ...} per line, checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no pairs file at {path} (${PAIRS_ENV})")
    pairs, seen = [], {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path} line {n} is not valid JSON ({e})") from None
        missing = [k for k in PAIR_KEYS if not isinstance(row, dict) or not isinstance(row.get(k), str)]
        if missing:
            raise ValueError(f"{path} line {n} has no string {', '.join(map(repr, missing))}; each line needs "
                             f"{', '.join(PAIR_KEYS)}")
        if row["pair_id"] in seen:
            raise ValueError(f"{path} line {n} repeats pair_id {row['pair_id']!r} of line {seen[row['pair_id']]}")
        seen[row["pair_id"]] = n
        pairs.append(row)
    if not pairs:
        raise ValueError(f"{path} holds no pairs")
    return pairs


def _workspace():
    from ..workspace import Workspace

    return Workspace()          # $RLHF_KIT_PRESET and $RLHF_KIT_HOME


def classroom_pairs(environ=None) -> list[dict]:
    """The pairs to label: the file named by $RLHF_KIT_CLASSROOM_PAIRS, else the candidate pairs of the workspace's
    `preferences` stage (built first if missing: minutes; scripts/classroom.sh builds it before serving)."""
    environ = os.environ if environ is None else environ
    if environ.get(PAIRS_ENV):
        return read_pairs(environ[PAIRS_ENV])
    # The same file as rlhf_kit.reward.load_pairs, read without importing torch: one kernel per student.
    return read_pairs(_workspace().ensure("preferences") / "pairs.jsonl")


def classroom_dir(environ=None) -> Path:
    """$RLHF_KIT_CLASSROOM_DIR, else `classroom/` in the workspace root (<home>/<preset>-seed0)."""
    environ = os.environ if environ is None else environ
    if environ.get(DIR_ENV):
        return Path(environ[DIR_ENV]).expanduser()
    return _workspace().root / "classroom"


def classroom_budget(environ=None) -> int | None:
    """$RLHF_KIT_CLASSROOM_BUDGET as a positive int, else None (every pair)."""
    environ = os.environ if environ is None else environ
    value = (environ.get(BUDGET_ENV) or "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"${BUDGET_ENV} is {value!r}; expected a positive number of pairs per student")
    return int(value)


def _jsonable(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python -m rlhf_kit.ui.classroom LABELS_DIR   (prints pool(LABELS_DIR) as JSON, nan as null)")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    summary = pool(argv[0])
    summary.pop("pooled")
    print(json.dumps(_jsonable(summary), indent=2, ensure_ascii=False))
    for row in summary["unreadable"]:
        print(f"left out {row['file']}: {row['problem']}", file=sys.stderr)
    if summary["unreadable"]:
        print(f"pooled {len(summary['files']) - len(summary['unreadable'])} of {len(summary['files'])} label files; "
              f"fix or move the files above and run this again to include them", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
