"""Language modelling: next-token cross-entropy over windows, and text sampled from a prompt.

An example is a window of tokens [T] whose targets are the same window one step later.
Its loss is the mean next-token cross-entropy over the window in nats; `bits_per_char` is
that loss / ln 2 (per token: per character for a character-level vocabulary) and
`accuracy` the fraction of next tokens predicted exactly. The best model has the lowest
`bits_per_char`.

After each evaluation the process that writes files samples `sample_length` tokens after
`sample_prompt`, at `sample_temperature` (0 = greedy), with the evaluation's fixed key (so
the same seed gives the same text), and appends them to `DIR/samples.txt` under the step.
A resumed run repeats its evaluations after the checkpoint: their earlier entries are
replaced, not duplicated. Sampling needs the model's `continue_from(tokens, carry)`
(`lstm_lm` and `transformer_lm` have it; see `jaxdl.models.recurrent.sample_tokens`). A
model with a context window (`max_len`, as `transformer_lm`) must fit the dataset's
windows; its samples slide that window over a longer prompt and generation.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl import runs
from jaxdl.models.recurrent import sample_tokens
from jaxdl.schema import ConfigError, Field, non_negative
from jaxdl.tasks.base import Task, build_model_from_config, example_rows, register_task

SAMPLES = runs.SAMPLES_TXT
_HEADER = re.compile(r"^=== step (\d+) ===$", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class LanguageModelTask(Task):
    model: nn.Module
    vocabulary: str  # token id -> character
    sample_length: int
    sample_temperature: float
    sample_prompt: str
    monitor: str = "bits_per_char"
    monitor_mode: str = "min"

    @classmethod
    def metric_names(cls, task_config):
        return ("loss", "bits_per_char", "accuracy")

    def apply(self, variables, batch, *, train, rng):
        logits, new_state = self.run_model(variables, batch["inputs"], train=train, rng=rng,
                                           rows=example_rows(batch))
        targets = batch["targets"]
        nats = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                               targets)
        loss = jnp.mean(nats, axis=-1)
        correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
        values = {"loss": loss, "bits_per_char": loss / math.log(2),
                  "accuracy": jnp.mean(correct, axis=-1)}
        return values, new_state

    def encode(self, text: str) -> np.ndarray:
        return np.asarray([self.vocabulary.index(c) for c in text], np.int32)

    def decode(self, tokens) -> str:
        return "".join(self.vocabulary[int(t)] for t in tokens)

    @functools.cached_property
    def _sample(self):
        return jax.jit(functools.partial(sample_tokens, self.model, length=self.sample_length,
                                         temperature=self.sample_temperature))

    def sample(self, variables, rng: jax.Array) -> str:
        """`sample_length` characters sampled after the prompt (deterministic per `rng`)."""
        tokens = self._sample(variables, jnp.asarray(self.encode(self.sample_prompt))[None], rng)
        return self.decode(np.asarray(tokens)[0])

    def on_eval(self, context):
        if context.write_files and self.sample_length:
            text = self.sample(context.variables, context.rng)
            append_sample(context.workdir / SAMPLES, context.step, self.sample_prompt + text)
        return {}


def append_sample(path: Path, step: int, text: str) -> None:
    """Appends `text` under a `=== step N ===` header, first dropping the entries of this
    step and later ones (left by the run a resume repeats)."""
    kept = path.read_text() if path.exists() else ""
    for match in _HEADER.finditer(kept):
        if int(match.group(1)) >= step:
            kept = kept[:match.start()]
            break
    path.write_text(f"{kept}=== step {step} ===\n{text}\n\n")


@register_task("language_model", task=LanguageModelTask, fields={
    "sample_length": Field(int, check=non_negative, help="characters sampled after each "
                                                         "evaluation (0 = none)"),
    "sample_temperature": Field(float, check=non_negative, help="0 = the most likely token"),
    "sample_prompt": Field(str, help="text the samples continue; every character must be "
                                     "in the dataset's vocabulary"),
})
def build_language_model(config, dataset, *, axis_name) -> Task:
    vocabulary = (dataset.metadata or {}).get("vocabulary")
    if vocabulary is None:
        raise ConfigError(f"config.task.name='language_model' needs a token vocabulary, but "
                          f"dataset {dataset.name!r} has none in its metadata")
    vocabulary = "".join(vocabulary)
    if config.model.get("vocab_size") not in (None, len(vocabulary)):
        raise ConfigError(f"config.model.vocab_size={config.model.vocab_size} but dataset "
                          f"{dataset.name!r} has {len(vocabulary)} tokens")
    task = config.task
    unknown = sorted(set(task.sample_prompt) - set(vocabulary))
    if unknown:
        raise ConfigError(f"config.task.sample_prompt holds characters outside the "
                          f"vocabulary of {dataset.name!r}: {''.join(unknown)!r}")
    model = build_model_from_config(config, axis_name=axis_name)
    window = dataset.features.shape[-1] if dataset.features.ndim == 2 else None
    max_len = getattr(model, "max_len", None)
    if window is not None and max_len is not None and window > max_len:
        raise ConfigError(f"config.model.max_len={max_len} but dataset {dataset.name!r} has "
                          f"windows of {window} tokens; raise max_len or shorten the window")
    if task.sample_length:
        if not task.sample_prompt:
            raise ConfigError("config.task.sample_prompt must not be empty when "
                              "config.task.sample_length > 0")
        if not hasattr(model, "continue_from"):
            raise ConfigError(f"config.task.sample_length > 0 needs a model with "
                              f"continue_from(tokens, carry); {config.model.name!r} has none "
                              "(set sample_length=0)")
    return LanguageModelTask(model=model, vocabulary=vocabulary,
                             sample_length=task.sample_length,
                             sample_temperature=task.sample_temperature,
                             sample_prompt=task.sample_prompt)
