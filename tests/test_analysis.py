"""jaxdl.analysis over one short digits run (trained once for the module): FGSM at epsilon
0 gives the logged clean accuracy exactly, PGD is at least as strong as FGSM and both keep
their bounds, the landscape's anchor points are the losses the run logged, integrated
gradients are complete, Deep Dream raises its objective, distortions of strength 0 change
nothing; bad input is one line, exit status 2, nothing written.

Every test that needs the trained run is in the slow tier: training it and compiling each
tool's attack, gradients or grid costs about 2 CPU-minutes for the module, far beyond the
fast tier's share (tests/test_analysis_math.py checks the same math on tiny models there).
"""

import io
import json
import shutil

import numpy as np
import pytest
from conftest import make_config, run_cli

from jaxdl.analysis import __main__ as cli
from jaxdl.analysis import adversarial, distortions, dream, landscape, saliency
from jaxdl.schema import ConfigError
from jaxdl.trained import load_run
from jaxdl.training import loop

QUIET = {"logging.tensorboard": False, "logging.progress": False, "logging.plot": False}
STEPS = (40, 80)  # evaluated and checkpointed at both


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """80 steps (about 4 epochs) of a narrow digits_cnn on one device, evaluated and
    checkpointed at steps 40 and 80. Its inputs are normalised (x10 around 0.5) on the way
    into the model, so a tool that perturbs the normalised inputs instead of the pixels, or
    skips the normalisation, gets the wrong numbers."""
    workdir = tmp_path_factory.mktemp("analysis") / "run"
    config = make_config("digits_cnn", **QUIET, **{
        "train.duration": f"{STEPS[1]} steps", "train.eval_every": f"{STEPS[0]} steps",
        "train.log_every": f"{STEPS[0]} steps", "checkpoint.every": f"{STEPS[0]} steps",
        "checkpoint.keep_last": 2, "train.test_every_eval": True,
        "data.augmentation": "normalize(mean=(0.5,),std=(0.1,))",
        "model.features": (8, 16), "model.dense_width": 32, "parallel.num_devices": 1})
    loop.train_and_evaluate(config, workdir, stream=io.StringIO())
    return workdir


@pytest.fixture(scope="module")
def latest(digits_run):
    """The run at its final checkpoint (step 80), loaded once for the module."""
    return load_run(digits_run, "latest")


def logged(workdir, split: str, step: int) -> dict:
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["split"] == split and record["step"] == step:
            return record
    raise AssertionError(f"no {split} record at step {step}")


def attack(run, name, **overrides):
    options = dict(attack=name, norm="linf", epsilons=[0.1], steps=10, step_size=0.25,
                   random_start=True, target=None, split="test", examples=None,
                   batch_size=128, shown=4, seed=0)
    return adversarial.analyse(run, **{**options, **overrides})


@pytest.mark.slow
def test_fgsm_at_epsilon_zero_is_the_logged_clean_accuracy_exactly(digits_run, latest):
    run = latest
    report = attack(run, "fgsm")
    at_zero = report["results"][0]
    assert at_zero["epsilon"] == 0.0 and at_zero["largest_perturbation"] == 0.0
    assert at_zero["accuracy"] == report["clean_accuracy"]
    assert at_zero["accuracy"] == pytest.approx(logged(digits_run, "test", STEPS[1])["accuracy"],
                                                abs=1e-12)
    out = digits_run / "analysis" / "adversarial"
    assert {p.name for p in out.iterdir()} == {"adversarial.json", "accuracy_vs_epsilon.png",
                                               "examples.png"}


@pytest.mark.slow
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_pgd_is_at_least_as_strong_as_fgsm_and_both_keep_their_bounds(latest, norm, eps):
    run = latest
    reports = {name: attack(run, name, norm=norm, epsilons=[eps], examples=128)
               for name in ("fgsm", "pgd")}
    accuracy = {name: r["results"][1]["accuracy"] for name, r in reports.items()}
    assert accuracy["pgd"] <= accuracy["fgsm"] < reports["pgd"]["clean_accuracy"]
    for report in reports.values():
        row = report["results"][1]
        assert row["epsilon"] == eps and 0 < row["largest_perturbation"] <= eps * (1 + 1e-5)
        assert 0.0 <= row["adversarial_range"][0] <= row["adversarial_range"][1] <= 1.0


@pytest.mark.slow
def test_a_targeted_attack_reports_how_often_it_hits_the_target(latest):
    report = attack(latest, "pgd", target="next", examples=64, epsilons=[0.3])
    rates = [row["target_success_rate"] for row in report["results"]]
    assert rates[0] < 0.2 < 0.5 < rates[1]  # clean inputs rarely look like label + 1


@pytest.mark.slow
def test_the_landscape_line_ends_at_the_validation_losses_the_run_logged(digits_run, latest):
    """Between the run's two checkpoints, on the whole validation split: alpha 0 and 1 are
    the weights the run evaluated at steps 40 and 80, so the losses are the logged ones
    (the same per-example values, summed in another order)."""
    run = latest
    report = landscape.analyse_line(run, other=load_run(digits_run, STEPS[0]), points=3,
                                    margin=0.0, split="validation", examples=None, seed=0)
    assert report["alpha"] == [0.0, 0.5, 1.0]
    for end, step in (("at_start", STEPS[0]), ("at_end", STEPS[1])):
        record = logged(digits_run, "validation", step)
        assert report[end]["loss"] == pytest.approx(record["loss"], rel=1e-5)
        assert report[end]["accuracy"] == pytest.approx(record["accuracy"], abs=1e-6)


@pytest.mark.slow
def test_the_landscape_plane_centre_is_the_final_validation_loss(digits_run, latest):
    run = latest
    report = landscape.analyse_plane(run, points=3, span=0.5, split="validation",
                                     examples=None, seed=0)
    loss = np.asarray(report["loss"])
    assert loss.shape == (3, 3) and report["coordinates"] == [-0.5, 0.0, 0.5]
    assert loss[1, 1] == pytest.approx(logged(digits_run, "validation", STEPS[1])["loss"],
                                       rel=1e-5)
    assert loss.max() > loss[1, 1]
    assert {"plane.json", "contour.png", "surface.png"} <= {
        p.name for p in (digits_run / "analysis" / "landscape").iterdir()}


@pytest.mark.slow
def test_the_landscape_line_from_the_initial_weights_starts_at_chance(latest):
    run = latest
    report = landscape.analyse_line(run, points=2, margin=0.0, split="train", examples=256,
                                    seed=0)
    # Initial weights of a 10-class model are near chance; the trained ones are not.
    assert report["at_start"]["accuracy"] < 0.3 < report["at_end"]["accuracy"] - 0.3
    assert report["at_start"]["loss"] > report["at_end"]["loss"]


@pytest.mark.slow
def test_integrated_gradients_are_complete_on_the_trained_model(digits_run, latest):
    run = latest
    report = saliency.analyse(run, split="test", indices=[0, 5], explain="label", samples=4,
                              noise=0.15, steps=8192, seed=0)
    for row in report["examples"]:
        assert row["completeness_error"] < 1e-3
        assert row["integrated_gradients_sum"] == pytest.approx(
            row["score"] - row["baseline_score"], abs=1e-3)
    assert (digits_run / "analysis" / "saliency" / "saliency.png").is_file()


@pytest.mark.slow
def test_dream_raises_its_objective(latest):
    run = latest
    options = dict(channel=None, start="noise", split="test", indices=[0], octaves=2,
                   octave_scale=1.4, steps=5, step_size=0.02, jitter=1, tv_weight=0.05,
                   seed=0)
    for target in ({"layer": "Conv_1", "class_index": None},
                   {"layer": None, "class_index": 3}):
        report = dream.analyse(run, **target, **options)
        (image,) = report["images"]
        assert image["objective_after"] > image["objective_before"]


@pytest.mark.slow
def test_distortions_of_strength_zero_keep_the_clean_accuracy(digits_run, latest):
    run = latest
    report = distortions.analyse(run, sweeps={"rotate": [0, 45], "gaussian_noise": [0],
                                              "cutout": [0]},
                                 split="test", examples=None, batch_size=128, seed=0)
    clean = logged(digits_run, "test", STEPS[1])["accuracy"]
    table = report["distortions"]
    for name in ("rotate", "gaussian_noise", "cutout"):
        assert table[name][0]["accuracy"] == pytest.approx(clean, abs=1e-12)
    assert table["rotate"][1]["accuracy"] < clean


# --- bad input: one line, exit status 2, nothing written --------------------------------------

def _copy(digits_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(digits_run, copy, ignore=shutil.ignore_patterns("analysis"))
    return copy


def _refused(argv, capsys, match):
    assert cli.main(argv) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert match in err


def test_a_workdir_that_is_not_a_run_is_refused(tmp_path, capsys):
    _refused(["adversarial", f"--run={tmp_path}"], capsys, "is not a jaxdl run")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_an_unfinished_run_without_checkpoints_is_refused(digits_run, tmp_path, capsys):
    copy = _copy(digits_run, tmp_path)
    shutil.rmtree(copy / "checkpoints")
    (copy / "summary.json").unlink()
    _refused(["saliency", f"--run={copy}"], capsys, "holds no jaxdl checkpoint")
    assert not (copy / "analysis").exists()


@pytest.mark.slow
@pytest.mark.parametrize("argv,match", [
    (["adversarial", "--epsilons=0.1,1.5"], "epsilon 1.5 is outside the pixel range"),
    (["adversarial", "--norm=l2", "--epsilons=-0.1"], "epsilon -0.1 is outside"),
    (["dream", "--layer=Conv_9"], "its layers: Conv_0, Conv_1, Dense_0, Dropout_0, Dense_1"),
    (["landscape", "--from_run=/nonexistent"], "is not a jaxdl run"),
    (["saliency", "--examples=0,9999"], "give row numbers of the test split"),
])
def test_bad_tool_input_is_refused_before_anything_is_written(digits_run, tmp_path, capsys,
                                                              argv, match):
    copy = _copy(digits_run, tmp_path)
    _refused([argv[0], f"--run={copy}", *argv[1:]], capsys, match)
    assert not (copy / "analysis").exists()


@pytest.mark.slow
def test_dream_names_the_valid_layers_of_a_wrong_one(latest):
    with pytest.raises(ConfigError, match=r"layer 'conv_1' is not in model 'cnn'; its layers: "
                                          r"Conv_0, Conv_1"):
        dream.analyse(latest, layer="conv_1", class_index=None,
                      channel=None, start="test", split="test", indices=[0], octaves=1,
                      octave_scale=1.0, steps=1, step_size=0.01, jitter=0, tv_weight=0.0,
                      seed=0)


# --- the CLI end to end -----------------------------------------------------------------------

@pytest.mark.parametrize("argv,files", [
    (["adversarial", "--attack=pgd", "--norm=l2", "--epsilons=0.5,1", "--steps=5",
      "--examples=64", "--target=next"],
     {"adversarial.json", "accuracy_vs_epsilon.png", "examples.png"}),
    (["dream", "--layer=Conv_0", "--channel=1", "--steps=10"], {"dream.json", "dream.png"}),
    (["landscape", "--mode=plane", "--points=5", "--examples=128"],
     {"plane.json", "contour.png", "surface.png"}),
])
@pytest.mark.slow
def test_each_tool_runs_from_the_command_line(digits_run, argv, files):
    result = run_cli("jaxdl.analysis", argv[0], f"--run={digits_run}", *argv[1:])
    assert result.returncode == 0, result.stderr
    tool = argv[0]
    out = digits_run / "analysis" / tool
    assert files <= {p.name for p in out.iterdir()}
    for name in files:
        if name.endswith(".png"):
            assert (out / name).read_bytes().startswith(b"\x89PNG")
    report = json.loads((out / next(f for f in files if f.endswith(".json"))).read_text())
    # The default checkpoint: the best on validation for every tool but the landscape,
    # whose line and plane are about the final weights.
    assert report["checkpoint"] == ("latest" if tool == "landscape" else "best")
