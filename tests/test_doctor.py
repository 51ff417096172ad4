import importlib.metadata as metadata
import sys

from rlhf_kit import device, doctor


def _by_item(rows):
    return {r["item"]: r for r in rows}


def test_table_has_every_item(tmp_path, capsys):
    rows = doctor.collect(tmp_path)
    items = _by_item(rows)
    for item in ("python", "torch", "transformers", "trl", "device", "widgets front-end", "workspace",
                 "free space", "HF_HUB_OFFLINE"):
        assert item in items
    assert items["device"]["value"].startswith("cpu")
    assert int(items["cpu threads"]["value"]) >= 1
    free, unit = items["free space"]["value"].split()
    assert float(free) > 0 and unit == "GiB"
    assert doctor.main(tmp_path) == 0
    out = capsys.readouterr().out
    assert "transformers" in out and str(tmp_path) in out


def test_missing_package_is_a_failure_with_a_fix(monkeypatch, tmp_path):
    real = metadata.version

    def fake(name):
        if name == "trl":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(doctor.metadata, "version", fake)
    row = _by_item(doctor.collect(tmp_path))["trl"]
    assert row["status"] == "fail" and "setup.sh" in row["hint"]
    assert doctor.main(tmp_path) == 1


def test_version_mismatch_warns_with_both_versions(monkeypatch, tmp_path):
    real = metadata.version
    monkeypatch.setattr(doctor.metadata, "version", lambda name: "0.0.1" if name == "datasets" else real(name))
    row = _by_item(doctor.collect(tmp_path))["datasets"]
    assert row["status"] == "warn"
    assert "0.0.1" in row["hint"] and "tested with" in row["hint"]
    assert "Warnings:" in doctor.render(doctor.collect(tmp_path))


def test_offline_flag_warning(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert _by_item(doctor.collect(tmp_path))["HF_HUB_OFFLINE"]["status"] == "warn"


def test_render_lists_every_item_and_the_hints_of_problems():
    rows = [doctor._row("python", "3.11.7"), doctor._row("trl", "not installed", "fail", "install trl"),
            doctor._row("HF_HUB_OFFLINE", "unset", "warn", "set HF_HUB_OFFLINE=1")]
    text = doctor.render(rows)
    for row in rows:
        assert row["item"] in text and row["value"] in text
    warnings = text.split("Warnings:")[1]
    assert "[fail] install trl" in warnings and "[warn] set HF_HUB_OFFLINE=1" in warnings


def test_free_space_is_measured_on_the_nearest_existing_parent(tmp_path):
    items = _by_item(doctor.collect(tmp_path / "not" / "yet" / "made"))
    assert items["workspace"]["value"].endswith("made")
    assert float(items["free space"]["value"].split()[0]) > 0


def test_workspace_defaults_to_rlhf_kit_home(monkeypatch, tmp_path):
    monkeypatch.setenv("RLHF_KIT_HOME", str(tmp_path / "home"))
    assert _by_item(doctor.collect())["workspace"]["value"] == str(tmp_path / "home")


def test_a_workspace_home_that_is_a_file_fails(monkeypatch, tmp_path, capsys):
    home = tmp_path / "home.txt"
    home.write_text("a file")
    monkeypatch.setenv("RLHF_KIT_HOME", str(home))
    row = _by_item(doctor.collect())["workspace"]
    assert row["status"] == "fail" and f"the workspace home {home} is a file, not a folder" in row["hint"]
    assert doctor.main() == 1
    assert f"[fail] the workspace home {home} is a file" in capsys.readouterr().out


def test_an_unwritable_workspace_home_fails(monkeypatch, tmp_path):
    from rlhf_kit import workspace

    monkeypatch.setattr(workspace, "_writable", lambda folder: folder != tmp_path)    # root may write anywhere
    row = _by_item(doctor.collect(tmp_path))["workspace"]
    assert row["status"] == "fail" and f"the workspace home {tmp_path} is not writable by this user" in row["hint"]
    assert _by_item(doctor.collect(tmp_path / "to-be-made"))["workspace"]["status"] == "fail"   # made in tmp_path


def test_forcing_a_missing_device_fails_with_what_is_available(monkeypatch, tmp_path):
    monkeypatch.setenv("RLHF_KIT_DEVICE", "mps")
    monkeypatch.setattr(device.torch.backends.mps, "is_available", lambda: False)
    row = _by_item(doctor.collect(tmp_path))["device"]
    assert row["status"] == "fail" and "available: " in row["hint"] and "cpu" in row["hint"]


def test_missing_widgets_front_end_warns(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "prefix", str(tmp_path))  # an environment without the labextension directory
    row = _by_item(doctor.collect(tmp_path))["widgets front-end"]
    assert row["status"] == "warn" and "pip install jupyterlab_widgets" in row["hint"]
