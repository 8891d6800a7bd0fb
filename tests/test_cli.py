"""The command line: help, list-plugins, config commands, clean errors."""

from __future__ import annotations

import json

from click.testing import CliRunner

from hydradgl.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_help_lists_commands():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("train", "evaluate", "predict", "experiment", "list-plugins", "config", "data", "model"):
        assert command in result.output


def test_list_plugins_table_and_json():
    table = run("list-plugins")
    assert table.exit_code == 0 and "hydradgl" in table.output and "built-in" in table.output
    data = json.loads(run("list-plugins", "--json").output)
    builtin = next(d for d in data["distributions"] if d["name"] == "hydradgl")
    assert builtin["builtin"] and builtin["status"] == "ok"
    assert {"pna", "sage", "cgcnn", "schnet", "egnn"} <= set(builtin["provides"]["conv"])
    assert {p["name"] for p in data["plugins"] if p["kind"] == "dataset"} >= {"fept", "lsms", "extxyz"}


def test_config_show_applies_flags():
    result = run("config", "show", "--conv", "sage", "--heads", "H", "--epochs", "4", "--set", "model.hidden=32")
    assert result.exit_code == 0, result.output
    assert "conv: sage" in result.output and "epochs: 4" in result.output and "hidden: 32" in result.output
    assert "name: C" not in result.output


def test_config_schema_is_json_schema():
    schema = json.loads(run("config", "schema").output)
    assert schema["additionalProperties"] is False and "training" in schema["properties"]


def test_user_error_is_clean_and_debug_shows_traceback():
    result = run("config", "show", "--set", "training.epoks=3")
    assert result.exit_code == 1
    assert "did you mean 'epochs'" in result.output and "Traceback" not in result.output
    debug = run("--debug", "config", "show", "--set", "training.epoks=3")
    assert debug.exit_code == 1 and debug.exception is not None  # re-raised with --debug


def test_unknown_plugin_fails_before_any_work():
    result = run("train", "--conv", "pnaa")
    assert result.exit_code == 1 and "Did you mean 'pna'" in result.output


def test_bad_set_syntax():
    result = run("config", "show", "--set", "training.epochs")
    assert result.exit_code == 1 and "expected KEY=VALUE" in result.output


def test_list_plugins_shows_broken_distribution(monkeypatch):
    from importlib.metadata import EntryPoint

    from hydradgl.cli import plugins_cmd
    from hydradgl.plugins import load_registry
    from tests.test_registry import FakeDist

    broken = EntryPoint("ghost", "hd_cli_missing_module", "hydradgl")._for(FakeDist("pkg-ghost", "0.3"))
    monkeypatch.setattr(plugins_cmd, "get_registry", lambda: load_registry([broken]))
    table = run("list-plugins")
    assert table.exit_code == 0 and "pkg-ghost" in table.output and "broken" in table.output
    data = json.loads(run("list-plugins", "--json").output)
    ghost = data["distributions"][0]
    assert ghost["status"] == "broken" and "hd_cli_missing_module" in ghost["errors"][0]


SMOKE = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")


def test_data_prepare_and_info():
    prepared = run("data", "prepare", "--config", SMOKE)
    assert prepared.exit_code == 0, prepared.output
    info = run("data", "info", "--config", SMOKE)
    assert info.exit_code == 0, info.output
    assert "157 graphs" in info.output and "5024 atoms" in info.output
    assert "Fe16Pt16" in info.output and "mu_B" in info.output


def test_data_prepare_with_workers_builds_the_cache_folder(tmp_path):
    built = run("data", "prepare", "--config", SMOKE, "--workers", "2", "--set", f"dataset.cache_dir={tmp_path}")
    assert built.exit_code == 0, built.output
    assert "processed graphs written to cache" in built.stderr and "157 graphs ready" in built.stderr
    manifest = json.loads(next((tmp_path / "processed").glob("*/manifest.json")).read_text())
    assert manifest["counts"]["graphs"] == 157 and manifest["counts"]["nodes"] == 5024
    assert run("data", "prepare", "--config", SMOKE, "--workers", "0").exit_code != 0


def test_data_commands_offer_only_data_flags():
    for command in ("prepare", "info"):
        text = run("data", command, "--help").output
        assert "--heads" in text and "--set" in text and "--dataset" in text
        for flag in ("--epochs", "--lr", "--conv", "--batch-size", "--device", "--output"):
            assert flag not in text, (command, flag)
    assert "--epochs" in run("train", "--help").output


def test_model_summary_counts_parameters():
    from hydradgl.data.pipeline import prepare_data
    from hydradgl.configio import load_config
    from hydradgl.model.assembler import build_model
    from pathlib import Path

    result = run("model", "summary", "--config", SMOKE)
    assert result.exit_code == 0, result.output
    cfg = load_config(Path(SMOKE))
    total = sum(p.numel() for p in build_model(cfg, prepare_data(cfg).info).parameters())
    assert f"{total:,}" in result.output and "conv 2 (PNAConv)" in result.output


def test_quiet_silences_logs_but_not_results_or_errors():
    loud = run("data", "prepare", "--config", SMOKE)
    assert loud.exit_code == 0 and "graphs ready" in loud.stderr
    quiet = run("-q", "data", "prepare", "--config", SMOKE)
    assert quiet.exit_code == 0 and quiet.stderr == ""
    shown = run("-q", "config", "show", "--epochs", "7")
    assert "epochs: 7" in shown.stdout
    failed = run("-q", "config", "show", "--set", "training.epoks=3")
    assert failed.exit_code == 1 and "did you mean 'epochs'" in failed.stderr


def test_user_errors_outside_click_formats_leaked_validation_error():
    import pytest

    from hydradgl.cli.common import user_errors
    from hydradgl.config import TrainingConfig

    with pytest.raises(SystemExit) as exit_info, user_errors():
        TrainingConfig(epochs=0)
    assert exit_info.value.code == 1
    with pytest.raises(ValueError), user_errors(debug=True):  # ValidationError is a ValueError
        TrainingConfig(epochs=0)


def test_error_text_with_brackets_is_not_taken_as_markup():
    result = run("config", "show", "--set", "heads=[{name: H, layers: [8], alpah: 1}]")
    assert result.exit_code == 1 and "heads[0].alpah: unknown key; did you mean 'alpha'?" in result.stderr
    result = run("config", "show", "--dataset", "fe[pt]")
    assert result.exit_code == 1 and "unknown dataset plugin 'fe[pt]'" in result.stderr


def test_data_info_says_which_readout_fits_each_graph_target(tmp_path):
    options = '{"per_composition": 1, "supercell": [1, 1, 2]}'
    info = run("data", "info", "--set", "dataset.name=emt-alloy", "--set", f"dataset.options={options}",
               "--set", "graph.periodic=true", "--set", "graph.radius=4.0")
    assert info.exit_code == 0, info.output
    rows = {line.split("│")[1].strip(): line for line in info.output.splitlines() if line.startswith("│")}
    assert "sum" in rows["energy"] and "mean" not in rows["energy"]  # total energy: extensive
    assert "mean" in next(v for k, v in rows.items() if k.startswith("mixing"))  # eV/atom: intensive
    assert "readout: the graph-head pooling" in info.output
    fept = run("data", "info", "--config", SMOKE)
    rows = {line.split("│")[1].strip(): line for line in fept.output.splitlines() if line.startswith("│")}
    assert "sum" in rows["H"] and "sum" not in rows["M"]  # H: mixing enthalpy of the whole cell; M: node level
