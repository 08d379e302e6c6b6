"""`python -m jaxdl.summary MODEL`: the per-layer table from eval_shape'd variables and its
two closing lines; bad input as one `error:` line and exit status 2."""

from __future__ import annotations

import pytest

from conftest import run_cli
from jaxdl import summary


def test_cli_densenet121_totals():
    result = run_cli("jaxdl.summary", "densenet121", timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-2:] == ["total params: 7978856", "total variables: 8062504"]
    assert lines[0].startswith("densenet121 (DenseNet121), input 1x224x224x3")
    header, rule, first = lines[1:4]
    assert header.split()[:2] == ["layer", "param"] and set(rule) == {"-"}
    assert first.split() == ["conv0", "kernel", "7x7x3x64", "9408", "0"]   # creation order
    rows = lines[3:-2]
    assert sum(int(row.split()[-2]) for row in rows) == 7978856
    assert sum(int(row.split()[-1]) for row in rows) == 8062504 - 7978856


def test_cli_unknown_model_is_one_error_line():
    result = run_cli("jaxdl.summary", "x", timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: unknown model 'x'; valid: ")
    assert "densenet121" in line and "inception_v3" in line


@pytest.mark.parametrize("name,kwargs,params,variables", [
    ("inception_v3", {}, 27_161_264, 27_197_488),                       # aux head by default
    ("inception_v3", {"fields": {"aux_logits": False}}, 23_834_568, 23_869_000),
    ("alexnet", {}, 61_100_840, 61_100_840),
    # the classifier at 10 classes: 1024 * 10 + 10 = 10,250 params instead of 1,025,000
    ("densenet121", {"num_classes": 10}, 7_978_856 - 1_025_000 + 10_250,
     8_062_504 - 1_025_000 + 10_250),
])
def test_summarize_counts(name, kwargs, params, variables):
    _, total_params, total = summary.summarize(name, **kwargs)
    assert (total_params, total) == (params, variables)


def test_small_models_use_the_fallback_input_shape():
    for name in ("cnn", "mlp"):
        lines, _, _ = summary.summarize(name, num_classes=10)
        assert "input 1x8x8x1" in lines[0]
    # mlp at the digits_mlp widths: 64*128+128 + 128*64+64 + 64*10+10
    assert summary.summarize("mlp", num_classes=10)[1] == 8320 + 8256 + 650


def test_input_shape_and_field_flags(capsys):
    assert summary.main(["alexnet", "--input_shape", "63,63,3", "--num_classes", "10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "input 1x63x63x3" in out[0]
    assert out[-2] == f"total params: {61_100_840 - 4096 * 1000 - 1000 + 4096 * 10 + 10}"


@pytest.mark.parametrize("argv,message", [
    (["alexnet", "--field", "foo=1"], "error: --field foo: unknown field of model 'alexnet'"),
    (["alexnet", "--input_shape", "a"], "error: argument --input_shape: expected H,W,C"),
    (["alexnet", "--input_shape", "32,32,3"], "error: model 'alexnet' on input (32, 32, 3):"),
    ([], "error: give a MODEL or --experiment NAME, not both or neither"),
])
def test_bad_input_is_one_error_line(capsys, argv, message):
    assert summary.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(message)


def test_vgg16_is_cheap():
    """138M parameters, but only shapes: no allocation, a fraction of a second's tracing."""
    assert summary.summarize("vgg16")[1] == 138_357_544
