"""Shared by the benchmark tests: the configs `benchmarks.step_throughput --model NAME` times,
and shrunken lstm_lm and dcgan overrides (the same code paths, compiled in seconds)."""

from __future__ import annotations

TINY_LSTM = ["--config.model.hidden_size=8", "--config.model.embed_dim=8",
             "--config.data.options.shape=(6,)"]
TINY_DCGAN = ["--config.model.generator_width=4", "--config.model.discriminator_width=4"]


def family_config(name: str, *extra: str, batches: int = 4):
    """The validated config `benchmarks.step_throughput --model NAME` times."""
    from benchmarks import step_throughput

    args, overrides = step_throughput.parse_args(
        ["--model", name, "--batches", str(batches), *extra])
    return step_throughput.load_config(args, overrides)


def family_dataset(config):
    """The family's synthetic data with 2 training rows (the ImageNet shapes stay small)."""
    from jaxdl import data as data_lib

    options = {**config.data.options, "examples": 2}
    return data_lib.load_source(config.data.name, **options)
