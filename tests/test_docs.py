"""Documentation that is generated must be current: the config reference, every built-in plugin's
options table and docs/architecture.md's module and plugin tables (hydradgl/configdoc.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydradgl.configdoc import builtin_specs, embedded, generated_parts, main, options_markdown
from hydradgl.plugins import get_registry

DOCS = Path(__file__).resolve().parents[1] / "docs"
REGENERATE = "regenerate with `python -m hydradgl.configdoc --write`"
PARTS = generated_parts()


@pytest.mark.parametrize("name", sorted(PARTS))
def test_generated_part_is_current(name):
    file, body = PARTS[name]
    current = embedded((DOCS / file).read_text(), name)
    assert current is not None, f"docs/{file} lacks <!-- {name}:start --> ... <!-- {name}:end -->; place them by hand"
    assert current == body, f"docs/{file}: {name} is stale; {REGENERATE}"


def test_every_builtin_plugin_has_an_options_part():
    # guards against an empty registry (entry points not installed) making the parts above vacuous
    names = {f"{kind}:{spec.name}" for kind, spec in builtin_specs(get_registry())}
    assert names >= {"dataset:lsms", "dataset:extxyz", "dataset:fept", "dataset:emt-alloy", "conv:pna", "conv:sage",
                     "conv:cgcnn", "conv:schnet", "conv:egnn", "head:graph-head", "head:node-head"}
    assert {f"options:{name}" for name in names} <= set(PARTS)


def test_every_config_key_is_documented():
    from hydradgl.config import RunConfig

    text = (DOCS / "config.md").read_text()
    for section, field in RunConfig.model_fields.items():
        model = getattr(field.annotation, "model_fields", None)
        for key in (model or {}):
            assert f"`{key}`" in text, f"{section}.{key}"


def test_an_options_table_has_every_key_nested_ones_dotted():
    from hydradgl_plugins.datasets.lsms import LSMSOptions

    spec = get_registry().dataset("lsms")
    text = options_markdown(spec)
    for key in LSMSOptions.model_fields:
        assert f"| `{key}` |" in text
    assert "| `extra_targets.<name>.column` | int | (required) |" in text
    assert "| `path` | Path | (required) |" in text


def test_write_fills_stale_parts_and_check_reports_them(tmp_path, capsys):
    for file in {file for file, _ in PARTS.values()}:
        (tmp_path / file).write_text((DOCS / file).read_text())
    page = tmp_path / "config.md"
    page.write_text(page.read_text().replace("| `towers` |", "| `towers_old` |"))
    assert main(["--check", "--docs", str(tmp_path)]) == 1
    assert "stale: config.md: options:conv:pna" in capsys.readouterr().out
    assert main(["--write", "--docs", str(tmp_path)]) == 0
    assert embedded(page.read_text(), "options:conv:pna") == PARTS["options:conv:pna"][1]
    assert main(["--check", "--docs", str(tmp_path)]) == 0


def test_missing_markers_are_reported(tmp_path, capsys):
    for file in {file for file, _ in PARTS.values()}:
        (tmp_path / file).write_text((DOCS / file).read_text())
    page = tmp_path / "architecture.md"
    page.write_text(page.read_text().replace("<!-- modules:end -->", ""))
    assert main(["--write", "--docs", str(tmp_path)]) == 1
    assert "no <!-- modules:start -->" in capsys.readouterr().err
