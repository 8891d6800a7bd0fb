"""Documentation that is generated must be current."""

from __future__ import annotations

from pathlib import Path

from hydradgl.configdoc import reference_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def test_config_reference_is_current():
    text = DOC.read_text()
    start = text.index("-->\n", text.index("<!-- generated")) + 4
    end = text.index("<!-- end generated -->")
    assert text[start:end] == reference_markdown(), "regenerate with `hydradgl config schema --markdown`"


def test_every_config_key_is_documented():
    from hydradgl.config import RunConfig

    text = DOC.read_text()
    for section, field in RunConfig.model_fields.items():
        model = getattr(field.annotation, "model_fields", None)
        for key in (model or {}):
            assert f"`{key}`" in text, f"{section}.{key}"
