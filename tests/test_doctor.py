import importlib.metadata as metadata

from rlhf_kit import doctor


def _by_item(rows):
    return {r["item"]: r for r in rows}


def test_table_has_every_item(tmp_path, capsys):
    rows = doctor.collect(tmp_path)
    items = _by_item(rows)
    for item in ("python", "torch", "transformers", "trl", "device", "widgets front-end", "workspace",
                 "free space", "HF_HUB_OFFLINE"):
        assert item in items
    assert items["device"]["value"].startswith("cpu")
    assert float(items["free space"]["value"].split()[0]) > 0
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
