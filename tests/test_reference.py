"""docs/config-reference.md is generated from the code (python -m jaxdl.reference): it is
current, and every config key (schema, tasks, optimizers, schedules, models) has a help
string."""

import pytest

from jaxdl import config as config_lib, reference
from jaxdl.schema import Field


def test_every_config_key_has_help():
    assert reference.missing_help() == []


def test_a_key_without_help_is_reported(monkeypatch):
    schema = config_lib.schema

    def with_a_bare_key():
        spec = schema()
        spec["train"]["bare"] = Field(int, default=0)
        return spec

    monkeypatch.setattr(config_lib, "schema", with_a_bare_key)
    assert reference.missing_help() == ["config: train.bare"]


def test_a_model_field_without_help_is_reported(monkeypatch):
    from jaxdl.models import cnn
    monkeypatch.setattr(cnn.CNN, "FIELDS", {**cnn.CNN.FIELDS, "pooling": Field(str)})
    assert reference.missing_help() == ["model 'cnn' (config.model): pooling"]


def test_the_reference_is_generated_from_the_current_code():
    text = reference.render()
    assert reference.OUTPUT.read_text() == text, (
        "docs/config-reference.md is stale: run python -m jaxdl.reference")
    # What it holds: a key's type, default, allowed values and help, and model fields.
    assert ("| `data.eval_limit` | int | `0` | >= 0 | evaluate only the first N eval batches"
            in text)
    assert "| `checkpoint.mode` | str | required | `max`, `min` |" in text
    assert "### model 'cnn' (config.model)" in text


def test_check_mode_fails_on_a_stale_file(tmp_path, capsys):
    stale = tmp_path / "ref.md"
    stale.write_text("old\n")
    assert reference.main(["--output", str(stale), "--check"]) == 1
    assert "is stale" in capsys.readouterr().err
    assert reference.main(["--output", str(stale)]) == 0
    assert reference.main(["--output", str(stale), "--check"]) == 0
