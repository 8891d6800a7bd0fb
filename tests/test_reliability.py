"""Hostile but realistic input (issue 14): every case ends in one clear line, no silent wrong result,
nothing already written lost. Grouped by topic; the CLI is invoked in-process where it is the subject."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hydradgl.cli import main
from hydradgl.configio import load_config, read_file, set_dotted
from hydradgl.errors import ConfigError, DataError

from tests.conftest import small_config


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def one_clean_line(result) -> str:
    """The error of a failed CLI call: exit 1, no traceback, starts with 'error:'."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.exception is not None
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.output.startswith("error:"), result.output
    return result.output


# -- configuration values that used to be bent without an error ----------------------------------

def test_duplicate_yaml_section_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("training:\n  epochs: 3\nmodel:\n  hidden: 4\ntraining:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml:5: key 'training' appears twice"):
        read_file(path)
    nested = tmp_path / "nested.yaml"
    nested.write_text("training:\n  epochs: 3\n  epochs: 4\n")
    with pytest.raises(ConfigError, match=r"nested.yaml:3: key 'epochs' appears twice"):
        read_file(nested)


def test_duplicate_json_key_is_an_error(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text('{"training": {"epochs": 3}, "training": {"lr": 0.1}}')
    with pytest.raises(ConfigError, match="'training' appears twice"):
        read_file(path)


@pytest.mark.parametrize("key, value, expected", [
    ("training.epochs", True, "training.epochs: Input should be a valid integer"),
    ("training.epochs", 5.0, "training.epochs: Input should be a valid integer"),
    ("training.lr", True, "training.lr: .*got a boolean"),
    ("graph.periodic", 1, "graph.periodic: Input should be a valid boolean"),
    ("graph.radius", float("inf"), "graph.radius: .*finite"),
    ("graph.radius", float("nan"), "graph.radius: "),
    ("heads", [{"name": "H", "layers": [0]}], r"heads\[0\].layers\[0\]: .*greater than or equal to 1"),
    ("heads", [{"name": "H", "layers": [50, -5]}], r"heads\[0\].layers\[1\]: .*greater than or equal to 1"),
])
def test_values_are_not_bent(key, value, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(None, {key: value})


def test_yaml_scientific_notation_still_reads_as_a_number():
    # PyYAML reads 1e-3 as a string; the float keys must keep accepting it.
    assert load_config(None, {"training.lr": "1e-3"}).training.lr == pytest.approx(1e-3)


def test_set_value_that_is_not_yaml_is_a_string():
    ok = cli("config", "show", "--dataset", "extxyz", "--set", "dataset.options.path=data",
             "--set", "dataset.options.pattern=*.xyz")
    assert ok.exit_code == 0 and "pattern: '*.xyz'" in ok.output
    bad = one_clean_line(cli("config", "show", "--set", "model.hidden=[1,2"))
    assert "model.hidden: Input should be a valid integer (got '[1,2')" in bad
    assert "valid integer" in one_clean_line(cli("config", "show", "--set", "training.epochs=yes"))


def test_set_reaches_into_lists_by_index_and_head_name():
    cfg = load_config(None, {"heads.0.layers": [10], "heads.M.alpha": 0.5})
    assert [h.name for h in cfg.heads] == ["H", "C", "M"]
    assert cfg.heads[0].layers == [10] and cfg.heads[2].alpha == 0.5 and cfg.heads[1].layers == [50, 25]
    picked = cli("config", "show", "--heads", "M,H", "--set", "heads.H.layers=[7]", "--set", "heads.0.alpha=2")
    assert picked.exit_code == 0, picked.output
    heads = __import__("yaml").safe_load(picked.output)["heads"]
    assert [(h["name"], h["layers"], h["alpha"]) for h in heads] == [("M", [50, 25], 2.0), ("H", [7], 1.0)]


@pytest.mark.parametrize("key, message", [
    ("heads.3.layers", "index 3 is out of range"),
    ("heads.X.layers", r"no entry named 'X' \(entries: H, C, M"),
    ("training.epochs.x", "'epochs' is not a section"),
    ("training..epochs", "empty key part"),
])
def test_set_into_lists_errors(key, message):
    data: dict = {"training": {"epochs": 3}}
    with pytest.raises(ConfigError, match=message):
        set_dotted(data, key, 1)


def test_set_and_flag_for_the_same_key_conflict():
    out = one_clean_line(cli("config", "show", "--epochs", "3", "--set", "training.epochs=4"))
    assert "--set training.epochs and --epochs both set training.epochs" in out


@pytest.mark.parametrize("content", [
    "training:\n  epochs: 3\n".encode("utf-16"),  # UTF-16 with BOM
    bytes(range(256)) * 4,  # random bytes
    b"PK\x03\x04\x00\x00\x08\x00\x00\x00!\x00\x80\x81\x82archive/data.pkl",  # a torch checkpoint's zip
])
def test_config_file_that_is_not_text_is_one_line(tmp_path, content):
    path = tmp_path / "cfg.yaml"
    path.write_bytes(content)
    out = one_clean_line(cli("config", "show", "-c", str(path)))
    assert str(path) in out and len(out.strip().splitlines()) == 1
