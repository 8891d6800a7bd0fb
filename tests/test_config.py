"""Configuration: files, overrides, head selection, errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hydradgl.config import RunConfig
from hydradgl.configio import dump_config, load_config, save_config, validate_plugin_options
from hydradgl.errors import ConfigError


def test_defaults_are_the_paper_setup():
    cfg = RunConfig()
    assert (cfg.model.conv, cfg.model.layers, cfg.model.hidden, cfg.graph.radius) == ("pna", 6, 20, 7.0)
    assert [h.name for h in cfg.heads] == ["H", "C", "M"] and cfg.heads[0].layers == [50, 25]
    assert (cfg.training.lr, cfg.training.batch_size, cfg.training.epochs) == (1e-3, 64, 200)
    assert cfg.split.fractions == (0.7, 0.15, 0.15)


def test_yaml_and_json_load_with_overrides(tmp_path):
    (tmp_path / "a.yaml").write_text("model:\n  conv: sage\ntraining:\n  epochs: 7\n")
    cfg = load_config(tmp_path / "a.yaml", {"training.epochs": 3, "model.hidden": 8})
    assert (cfg.model.conv, cfg.training.epochs, cfg.model.hidden) == ("sage", 3, 8)
    (tmp_path / "b.json").write_text(json.dumps({"graph": {"radius": 5.0}}))
    assert load_config(tmp_path / "b.json").graph.radius == 5.0


def test_misspelled_key_names_path_and_suggests(tmp_path):
    (tmp_path / "c.yaml").write_text("training:\n  epoks: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "c.yaml")
    assert "training.epoks: unknown key; did you mean 'epochs'?" in str(err.value)
    assert str(tmp_path / "c.yaml") in str(err.value)


def test_bad_value_names_key_and_value():
    with pytest.raises(ConfigError, match=r"training.lr: .*greater than 0.*-1"):
        load_config(None, {"training.lr": -1})
    with pytest.raises(ConfigError, match="fractions must be non-negative and sum to 1"):
        load_config(None, {"split.fractions": [0.5, 0.5, 0.5]})


def test_invalid_yaml_names_file_and_line(tmp_path):
    (tmp_path / "d.yaml").write_text("model:\n  conv: pna\n   hidden: [\n")
    with pytest.raises(ConfigError, match=r"d.yaml:\d+: invalid YAML"):
        load_config(tmp_path / "d.yaml")


def test_bad_plugin_option_uses_plugin_schema(registry):
    cfg = load_config(None, {"model.conv_options": {"aggregatrs": ["mean"]}})
    with pytest.raises(ConfigError, match=r"(?s)plugin 'pna'.*model.conv_options.aggregatrs: unknown key; did you mean 'aggregators'"):
        validate_plugin_options(cfg, registry)
    cfg = load_config(None, {"model.conv_options": {"aggregators": ["median"]}})
    with pytest.raises(ConfigError, match=r"model.conv_options.aggregators.\[?0\]?"):
        validate_plugin_options(cfg, registry)
    cfg = load_config(None, {"dataset.options": {"max_per_composition": 0}})
    with pytest.raises(ConfigError, match="dataset.options.max_per_composition"):
        validate_plugin_options(cfg, registry)


def test_heads_flag_keeps_configured_heads_and_order(tmp_path):
    (tmp_path / "h.yaml").write_text("heads:\n  - {name: H, alpha: 2.0, layers: [8]}\n  - {name: C}\n")
    cfg = load_config(tmp_path / "h.yaml", {"heads": ["M", "H"]})
    assert [h.name for h in cfg.heads] == ["M", "H"]
    assert cfg.heads[1].alpha == 2.0 and cfg.heads[1].layers == [8]
    assert cfg.heads[0].alpha == 1.0


def test_duplicate_head_names_rejected():
    with pytest.raises(ConfigError, match="head names must be unique, repeated: H"):
        load_config(None, {"heads": [{"name": "H"}, {"name": "H"}]})


def test_dump_and_reload_round_trip(tmp_path):
    cfg = load_config(None, {"model.conv": "cgcnn", "training.seed": 5})
    save_config(cfg, tmp_path / "cfg.yaml")
    assert load_config(tmp_path / "cfg.yaml") == cfg
    assert "conv: cgcnn" in dump_config(cfg)


SHIPPED_CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=[p.name for p in SHIPPED_CONFIGS])
def test_shipped_configs_validate(path, registry):
    cfg = load_config(path)
    validate_plugin_options(cfg, registry)
