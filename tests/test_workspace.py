import json
import os
import shutil
import subprocess
import sys

import pytest

from rlhf_kit import workspace
from rlhf_kit.presets import get_preset
from rlhf_kit.workspace import DONE_FILE, STALE_FILE, Workspace, WorkspaceError, builder_inputs, default_home


def test_default_home_env_and_repo(monkeypatch, tmp_path):
    monkeypatch.setenv("RLHF_KIT_HOME", str(tmp_path))
    assert default_home() == tmp_path
    monkeypatch.delenv("RLHF_KIT_HOME")
    assert default_home().name == "workspace"


def test_layout_per_preset_and_seed(tmp_path):
    ws = Workspace("ci", home=tmp_path, seed=3)
    assert ws.path("sft") == tmp_path / "ci-seed3" / "sft"


def test_a_preset_with_overrides_has_its_own_folder(tmp_path, micro_preset):
    """`get_preset("lab", sft_steps=50)` must never rebuild (and so delete) the learner's real `lab` artefacts."""
    plain = Workspace(micro_preset, home=tmp_path)
    plain.ensure("world")
    before = (plain.path("world") / DONE_FILE).read_text()
    other = Workspace(get_preset("micro", n_demos=micro_preset.n_demos + 3), home=tmp_path)
    assert other.root != plain.root and other.root.name.startswith("micro+")
    assert other.root.name.endswith("-seed0")
    assert Workspace(get_preset("micro", n_demos=micro_preset.n_demos), home=tmp_path).root == plain.root
    other.ensure("world")
    other.build("world")
    assert other.metrics("world")["demos"] == micro_preset.n_demos + 3
    assert (plain.path("world") / DONE_FILE).read_text() == before          # untouched
    assert json.loads((other.root / "preset.json").read_text()) == {
        "preset": "micro", "overrides": {"n_demos": micro_preset.n_demos + 3}}
    with pytest.raises(WorkspaceError, match=r"ensure\('sft'\)` on this workspace \(preset 'micro' with n_demos="):
        other.require("sft")


def test_the_same_overrides_find_the_same_folder_in_another_process(tmp_path):
    code = ("import sys; from rlhf_kit.presets import get_preset; from rlhf_kit.workspace import Workspace; "
            "print(Workspace(get_preset('lab', sft_steps=50, rm_lr=1e-4), sys.argv[1], seed=2).root)")
    roots = {subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2")}
    assert roots == {str(Workspace(get_preset("lab", sft_steps=50, rm_lr=1e-4), tmp_path, seed=2).root)}


def test_unknown_stage(tmp_path):
    with pytest.raises(ValueError, match="Unknown stage 'reward_model'.*world, base, sft"):
        Workspace("ci", home=tmp_path).path("reward_model")


def test_ensure_builds_the_chain_with_done_markers(micro_ws):
    for stage in ("world", "base", "sft"):
        assert (micro_ws.path(stage) / DONE_FILE).is_file()
        assert micro_ws.metrics(stage)["stage"] == stage
    assert (micro_ws.path("sft") / "config.json").is_file()
    # no temporary directories are left behind
    assert not [p for p in micro_ws.root.iterdir() if p.name.startswith(".")]


def test_ensure_does_not_rebuild_a_finished_stage(micro_ws):
    before = (micro_ws.path("base") / DONE_FILE).stat().st_mtime_ns
    micro_ws.ensure("base")
    assert (micro_ws.path("base") / DONE_FILE).stat().st_mtime_ns == before


def test_missing_artefact_error_says_what_to_run(tmp_path):
    ws = Workspace("ci", home=tmp_path)
    with pytest.raises(WorkspaceError, match=r"'sft' artefact is missing.*rlhf-kit sft --preset ci"):
        ws.require("sft")


def test_half_written_artefact_is_not_mistaken_for_finished(tmp_path, micro_preset):
    ws = Workspace(micro_preset, home=tmp_path)
    ws.path("world").mkdir(parents=True)
    (ws.path("world") / "corpus.jsonl").write_text('{"text": "half a fi')   # an interrupted write
    assert not ws.is_done("world")
    with pytest.raises(WorkspaceError, match="incomplete.*interrupted"):
        ws.require("world")
    ws.ensure("world")                                  # replaces it with a finished copy
    assert ws.is_done("world")
    assert json.loads((ws.path("world") / DONE_FILE).read_text())["demos"] == micro_preset.n_demos


def test_interrupted_build_leaves_previous_artefact_intact(tmp_path, micro_preset):
    ws = Workspace(micro_preset, home=tmp_path)
    ws.ensure("world")
    done_before = (ws.path("world") / DONE_FILE).read_text()

    class Interrupted(Exception):
        pass

    with pytest.raises(Interrupted):
        with ws.writing("world") as tmp:
            (tmp / "corpus.jsonl").write_text("partial")
            raise Interrupted
    assert (ws.path("world") / DONE_FILE).read_text() == done_before
    assert not [p for p in ws.root.iterdir() if p.name.startswith(".")]


def test_rebuild_replaces_atomically(tmp_path, micro_preset):
    ws = Workspace(micro_preset, home=tmp_path)
    ws.ensure("world")
    first = os.stat(ws.path("world") / DONE_FILE).st_ino
    ws.build("world")
    assert ws.is_done("world")
    assert os.stat(ws.path("world") / DONE_FILE).st_ino != first


def test_downstream_stages():
    from rlhf_kit.workspace import downstream

    assert downstream("base") == ["sft", "preferences", "reward", "ppo", "dpo", "grpo", "hacked", "ai-reward",
                                  "grpo-ai"]
    assert downstream("reward") == ["ppo", "dpo", "grpo", "hacked", "ai-reward", "grpo-ai"]
    assert downstream("ai-reward") == ["grpo-ai"]
    assert downstream("ppo") == []


def test_rebuilding_a_stage_removes_what_was_built_from_it(tmp_path, micro_preset):
    ws = Workspace(micro_preset, home=tmp_path)
    ws.ensure("sft")
    ws.build("base")
    assert ws.is_done("base") and ws.is_done("world")
    assert not ws.path("sft").exists()          # it was fine-tuned from the old base model


def test_ensure_rebuilds_a_stage_built_with_other_preset_values(tmp_path, micro_preset, capsys):
    ws = Workspace(micro_preset, home=tmp_path)
    ws.ensure("world")
    assert ws.metrics("world")["settings"]["n_demos"] == micro_preset.n_demos
    first = (ws.path("world") / DONE_FILE).read_text()
    ws.ensure("world")                                             # same values: kept
    assert (ws.path("world") / DONE_FILE).read_text() == first
    # a world built when the preset said 3 more demos (an older kit): ensure says so and rebuilds it
    done = json.loads(first)
    done["settings"]["n_demos"] += 3
    (ws.path("world") / DONE_FILE).write_text(json.dumps(done))
    assert ws.changed_settings("world") == {"n_demos": (micro_preset.n_demos + 3, micro_preset.n_demos)}
    ws.ensure("world")
    assert "Rebuilding 'world'" in capsys.readouterr().out
    assert ws.changed_settings("world") == {} and ws.metrics("world")["demos"] == micro_preset.n_demos
    # a later stage records the values of the stages before it, so an upstream change reaches it too
    assert "n_demos" in ws.settings("reward") and "rm_lr" not in ws.settings("sft")


@pytest.mark.parametrize("content, problem", [
    (b'{"stage": "world", "preset": "mi', "is not valid JSON"),                  # truncated
    (b"\x00\xff\x13garbage", "is not valid JSON"),
    (b"", "is not valid JSON"),
    (b"[1, 2]", "holds an array, not a JSON object"),
    (b'"done"', "holds a string, not a JSON object"),
    (b'{"settings": 5}', "has a number as 'settings', not a JSON object"),
])
def test_a_damaged_done_json_is_named_and_its_stage_rebuilt(tmp_path, micro_preset, capsys, content, problem):
    ws = Workspace(micro_preset, home=tmp_path)
    ws.ensure("world")
    done = ws.path("world") / DONE_FILE
    done.write_bytes(content)
    assert not ws.is_done("world") and problem in ws.done_record("world")[1]
    with pytest.raises(WorkspaceError, match=rf"damaged: {done} {problem}.*will be rebuilt by `ensure\('world'\)`"):
        ws.metrics("world")
    assert ws.changed_settings("world") == {}

    ws.ensure("world")
    out = capsys.readouterr().out
    assert f"{done} {problem}" in out and "the 'world' stage will be rebuilt" in out
    assert ws.metrics("world")["stage"] == "world"                  # rebuilt: a whole DONE.json again


def test_a_home_that_is_a_file_or_unwritable_is_one_line_naming_it(tmp_path, micro_preset, monkeypatch):
    home = tmp_path / "home.txt"
    home.write_text("not a folder")
    ws = Workspace(micro_preset, home=home)
    with pytest.raises(WorkspaceError, match=rf"^The workspace home {home} is a file, not a folder: set "
                                             rf"\$RLHF_KIT_HOME \(or --workspace\) to a folder you can write in\.$"):
        ws.ensure("world")
    inside = Workspace(micro_preset, home=home / "deeper")
    assert workspace.home_problem(inside.home) == (f"the workspace home {home / 'deeper'} cannot be created, "
                                                   f"because {home} is a file, not a folder: set $RLHF_KIT_HOME (or "
                                                   f"--workspace) to a folder you can write in.")

    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(workspace, "_writable", lambda folder: folder != locked)   # root may write anywhere
    with pytest.raises(WorkspaceError, match=rf"^The workspace home {locked} is not writable by this user: set"):
        Workspace(micro_preset, home=locked).build("world")
    assert workspace.home_problem(locked / "new").startswith(f"the workspace home {locked / 'new'} is not writable "
                                                             f"by this user (it would be created in {locked})")
    assert workspace.home_problem(tmp_path / "fresh" / "home") is None and not (tmp_path / "fresh").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write in any folder")
def test_a_home_without_write_permission_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert "is not writable by this user" in workspace.home_problem(locked)


def test_a_done_marker_without_settings_is_trusted(tmp_path, micro_preset):
    ws = Workspace(micro_preset, home=tmp_path)
    ws.path("world").mkdir(parents=True)
    (ws.path("world") / DONE_FILE).write_text("{}")
    assert ws.changed_settings("world") == {}
    assert ws.ensure("world") == ws.path("world")


def test_a_stage_does_not_depend_on_what_the_process_drew_before(tmp_path, micro_rm_ws):
    """Each process (each notebook kernel) starts torch's generator from a random seed, and the reward model's new
    head is drawn from it: a stage must be built from the workspace's seed alone. Built twice after different
    draws, the reward model is the same to the last bit."""
    import shutil

    import torch
    from safetensors.torch import load_file

    shutil.copytree(micro_rm_ws.root, tmp_path / micro_rm_ws.root.name)
    ws = Workspace(micro_rm_ws.preset, tmp_path, seed=micro_rm_ws.seed)
    weights = []
    for state in (1, 2):
        torch.manual_seed(state)
        torch.rand(state)
        weights.append(load_file(ws.build("reward") / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def my_loss(*args):
    """A stand-in for a learner's loss function."""


def test_done_records_the_builders_arguments(tmp_path):
    """A function as module.qualname, label stores as paths (relative to the workspace root when inside it), a
    dataclass field by field, the builder's defaults included, `callback` (it only draws) left out."""
    from dataclasses import dataclass

    from rlhf_kit.preferences import PreferenceStore

    @dataclass
    class Losses:
        gae: object = my_loss

    def builder(ws, out_dir, callback=None, loss_fn=my_loss, losses=None, extra_stores=(), n_pairs=None, **more):
        pass

    root = tmp_path / "micro-seed0"
    inputs = builder_inputs(builder, {"callback": print, "losses": Losses(), "beta": 0.1, "odd": {1, 2},
                                      "extra_stores": [root / "labels" / "you.jsonl",
                                                       PreferenceStore(tmp_path / "room" / "ann.jsonl")]}, root)
    assert inputs == {"loss_fn": "test_workspace.my_loss", "losses": {"gae": "test_workspace.my_loss"},
                      "extra_stores": ["labels/you.jsonl", str((tmp_path / "room" / "ann.jsonl").resolve())],
                      "n_pairs": None, "beta": 0.1, "odd": "{1, 2}"}
    json.dumps(inputs)


def test_a_misspelt_argument_fails_before_anything_is_built(tmp_path, micro_preset):
    ws = Workspace(micro_preset, home=tmp_path)
    with pytest.raises(TypeError, match="loss_fun"):
        ws.build("sft", loss_fun=my_loss)
    assert not ws.root.exists()


def test_done_json_records_the_reward_models_inputs(micro_rm_ws):
    inputs = micro_rm_ws.metrics("reward")["inputs"]
    assert inputs["loss_fn"].endswith(".bradley_terry_loss") and inputs["extra_stores"] == []
    assert "callback" not in inputs


@pytest.fixture
def labelled_ws(tmp_path, micro_rm_ws):
    """A copy of the micro workspace whose reward model was trained with the learner's labels (lab 02/03), and a
    classroom file beside them."""
    from rlhf_kit.preferences import PreferenceStore

    shutil.copytree(micro_rm_ws.root, tmp_path / micro_rm_ws.root.name)
    ws = Workspace(micro_rm_ws.preset, tmp_path, seed=micro_rm_ws.seed)
    yours = PreferenceStore(ws.root / "labels" / "you.jsonl")
    yours.record("p1", "a prompt", "good", "bad", "A", annotator="you")
    yours.record("p2", "another prompt", "fine", "awful", "A", annotator="you")
    PreferenceStore(ws.root / "classroom" / "ann.jsonl").record("p1", "a prompt", "x", "y", "B", annotator="ann")
    ws.build("reward", extra_stores=[yours.path])
    return ws


def label_files(ws) -> dict:
    return {p.relative_to(ws.root): p.read_bytes() for p in sorted(ws.root.glob("*/*.jsonl"))
            if p.parent.name in ("labels", "classroom")}


def test_rebuilding_a_stage_keeps_the_learners_labels_and_says_what_went_stale(labelled_ws, capsys):
    ws = labelled_ws
    labels = label_files(ws)
    assert len(labels) == 2
    capsys.readouterr()
    ws.build("world")
    out = capsys.readouterr().out
    assert label_files(ws) == labels                              # never deleted, never touched
    assert not any(ws.path(s).exists() for s in ("base", "sft", "preferences", "reward"))
    assert ("'base', 'sft', 'preferences' and 'reward' were built from the old 'world' and were removed; labs 00, 01, "
            "02 and 03 (or `ensure('reward')`) rebuild them.") in out
    assert "`ensure('reward')` trains 'reward' on the same label files again: labels/you.jsonl." in out
    assert "Your labels in labels/ and classroom/ are kept." in out
    stale = json.loads((ws.root / STALE_FILE).read_text())
    assert stale["reward"]["built_from_old"] == "world"
    assert stale["reward"]["inputs"]["extra_stores"] == ["labels/you.jsonl"]


def test_ensure_rebuilds_a_removed_stage_with_the_learners_labels(labelled_ws, capsys):
    """Re-running lab 00 must not silently drop the learner's labels from the reward model."""
    ws = labelled_ws
    n_pairs = ws.metrics("reward")["n_pairs"]
    ws.build("sft")
    assert not ws.path("reward").exists()
    capsys.readouterr()
    ws.ensure("reward")
    assert "Rebuilding 'reward' with the label files it was built with before: labels/you.jsonl." in \
        capsys.readouterr().out
    assert ws.metrics("reward")["inputs"]["extra_stores"] == ["labels/you.jsonl"]
    assert ws.metrics("reward")["n_pairs"] == n_pairs                  # the simulated labels and the learner's two
    assert not (ws.root / STALE_FILE).exists()                         # nothing is stale any more


def test_a_stage_rebuilt_by_hand_is_no_longer_stale(labelled_ws):
    ws = labelled_ws
    ws.build("preferences")
    assert "reward" in ws.stale()
    ws.build("reward")                      # the learner's choice: no label files this time
    assert ws.stale() == {} and ws.metrics("reward")["inputs"]["extra_stores"] == []


def test_label_files_that_are_gone_are_left_out(labelled_ws, capsys):
    ws = labelled_ws
    ws.build("preferences")
    (ws.root / "labels" / "you.jsonl").unlink()
    capsys.readouterr()
    ws.ensure("reward")
    out = capsys.readouterr().out
    assert "with the label files it was built with before: none. Gone, so left out: labels/you.jsonl." in out
    assert ws.metrics("reward")["inputs"]["extra_stores"] == []


def test_a_stage_rebuilt_for_new_preset_values_keeps_the_learners_labels(labelled_ws, capsys):
    ws = labelled_ws
    done = json.loads((ws.path("reward") / DONE_FILE).read_text())
    done["settings"]["rm_lr"] *= 2                                 # built when the preset said another rm_lr
    (ws.path("reward") / DONE_FILE).write_text(json.dumps(done))
    capsys.readouterr()
    ws.ensure("reward")
    out = capsys.readouterr().out
    assert "Rebuilding 'reward': it was built with other 'micro' settings" in out
    assert "with the label files it was built with before: labels/you.jsonl." in out
    assert ws.metrics("reward")["inputs"]["extra_stores"] == ["labels/you.jsonl"]


def test_build_keeps_its_curve_and_reuses_a_built_stage_only_when_told(tmp_path, micro_preset, monkeypatch, capsys):
    """A build with a callback writes what it passed to it in curve.json; with $RLHF_KIT_REUSE_BUILT=1 (the test
    suite's labs/ pass) `build` returns the built stage untouched and replays that curve, and builds a stage that is
    missing as usual; without it, `build` trains again."""
    from rlhf_kit.workspace import CURVE_FILE, REUSE_VAR

    ws = Workspace(micro_preset, home=tmp_path, seed=0)
    ws.ensure("base")
    seen = []
    ws.build("base", callback=lambda step, **values: seen.append((step, values)))
    recorded = json.loads((ws.path("base") / CURVE_FILE).read_text())
    assert len(recorded) == len(seen) >= 2
    assert [(p["step"], p["loss"]) for p in recorded] == [(step, values["loss"]) for step, values in seen]
    built_at = (ws.path("base") / "DONE.json").stat().st_mtime_ns
    ws.ensure("sft")

    monkeypatch.setenv(REUSE_VAR, "1")
    replayed = []
    assert ws.build("base", callback=lambda step, **values: replayed.append((step, values))) == ws.path("base")
    assert replayed == [(step, {"loss": values["loss"]}) for step, values in seen]
    assert (ws.path("base") / "DONE.json").stat().st_mtime_ns == built_at and ws.is_done("sft")
    assert "base: reusing the stage already built" in capsys.readouterr().out
    shutil.rmtree(ws.path("sft"))
    ws.build("sft")                                       # missing: built as usual
    assert ws.is_done("sft")

    monkeypatch.delenv(REUSE_VAR)
    ws.build("base")
    assert (ws.path("base") / "DONE.json").stat().st_mtime_ns != built_at and not ws.path("sft").exists()
