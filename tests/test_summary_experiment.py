"""`python -m jaxdl.summary --experiment NAME`: the experiment's own model (its fields,
classes and precision) on one example of its data, as flax's tabulate table with each
module's output shape, then the two closing totals."""

import pytest

from jaxdl import summary


def test_experiment_table_has_output_shapes_and_the_runs_parameter_count(capsys):
    assert summary.main(["--experiment", "digits_cnn"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("digits_cnn: model 'cnn' (CNN) in fp32, input 1x8x8x1 float32 "
                        "(digits)")
    dense_1 = next(line for line in lines if line.startswith("│ Dense_1"))
    assert "float32[1,128]" in dense_1 and "float32[1,10]" in dense_1  # in, out: 10 classes
    # conv 3x3x1x32+32, 3x3x32x64+64, dense 256x128+128 and 128x10+10
    assert lines[-2:] == ["total params: 53002", "total variables: 53002"]
    assert any("Total Parameters: 53,002" in line for line in lines)


@pytest.mark.parametrize("argv, message", [
    ([], "give a MODEL or --experiment NAME, not both or neither"),
    (["cnn", "--experiment", "digits_cnn"], "not both or neither"),
    (["--experiment", "no_such_experiment"], "no experiment 'no_such_experiment'")])
def test_experiment_bad_input_is_one_line(capsys, argv, message):
    assert summary.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err, err
