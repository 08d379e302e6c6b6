"""Sequence to sequence: an encoder-decoder trained with teacher forcing, scored on what it
decodes.

An example is a source [S] (id 0 pads) and a target [T] that ends with the end id and is
padded with 0 after it. The decoder reads the target shifted right behind the begin id
(teacher forcing); `loss` is the mean cross-entropy over the example's real target tokens
(padding has no loss). The dataset's metadata names `source_vocabulary`,
`target_vocabulary`, `pad_id` (0), `bos_id` and `eos_id` (jaxdl.data.dates,
jaxdl.data.synthetic's 'pairs').

Metrics: `token_accuracy`, the fraction of real target positions predicted exactly, and
`sequence_accuracy`, the fraction of examples whose every real target token (the end
included) is right. In training they are of the teacher-forced prediction (each step sees
the true previous token); at evaluation of the decoded output, T tokens generated from the
begin id alone, greedily (`beam_width` 1) or by beam search (`beam_width` > 1,
`length_penalty`; jaxdl.models.recurrent.beam_search). The best model has the highest
validation `sequence_accuracy`.

After the final evaluation the process that writes files decodes the first
`attention_examples` rows of the test split (the last eval split without one), writes
them with their targets to `DIR/translations.txt` and, for a model with attention, their
attention weights to `DIR/attention.png`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl import plots, runs
from jaxdl.models import recurrent
from jaxdl.schema import ConfigError, Field, non_negative, positive
from jaxdl.tasks.base import (EvalContext, Task, build_model_from_config, example_rows,
                              register_task)

METADATA = ("source_vocabulary", "target_vocabulary", "pad_id", "bos_id", "eos_id")


@dataclasses.dataclass(frozen=True)
class Seq2SeqTask(Task):
    model: nn.Module
    source_vocabulary: tuple[str, ...]
    target_vocabulary: tuple[str, ...]
    bos_id: int
    eos_id: int
    beam_width: int
    length_penalty: float
    attention_examples: int
    monitor: str = "sequence_accuracy"
    monitor_mode: str = "max"

    @classmethod
    def metric_names(cls, task_config):
        return ("loss", "token_accuracy", "sequence_accuracy")

    def init(self, rng, inputs):
        # The decoder's parameters do not depend on the target length: one begin token.
        return super().init(rng, {"source": inputs, "targets_in": self.shift(inputs[:, :0])})

    def shift(self, targets: jax.Array) -> jax.Array:
        """The decoder's teacher-forced input: the begin id, then `targets` but the last."""
        first = jnp.full((targets.shape[0], 1), self.bos_id, targets.dtype)
        return jnp.concatenate([first, targets[:, :-1]], axis=1)

    def decode(self, variables, source: jax.Array, length: int) -> jax.Array:
        """[B, length] tokens generated for `source` (padding after each end); traceable."""
        variables = {"params": variables["params"]}
        if self.beam_width == 1:
            return recurrent.greedy_decode(self.model, variables, source, bos_id=self.bos_id,
                                           length=length, eos_id=self.eos_id)
        return recurrent.beam_search(self.model, variables, source, bos_id=self.bos_id,
                                     eos_id=self.eos_id, length=length,
                                     beam_width=self.beam_width,
                                     length_penalty=self.length_penalty)

    def apply(self, variables, batch, *, train, rng):
        source, targets = batch["inputs"], batch["targets"]
        logits, new_state = self.run_model(
            variables, {"source": source, "targets_in": self.shift(targets)}, train=train,
            rng=rng, rows=example_rows(batch))
        real = targets != recurrent.PAD_ID
        count = jnp.maximum(jnp.sum(real, axis=-1), 1)
        nats = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        predicted = (jnp.argmax(logits, axis=-1) if train
                     else self.decode(variables, source, targets.shape[1]))
        right = predicted == targets
        values = {"loss": jnp.sum(jnp.where(real, nats, 0.0), axis=-1) / count,
                  "token_accuracy": jnp.sum(right & real, axis=-1) / count,
                  "sequence_accuracy": jnp.all(right | ~real, axis=-1).astype(jnp.float32)}
        return values, new_state

    def text(self, tokens, vocabulary) -> list[str]:
        """The tokens up to the first padding (or the end id), one entry per token."""
        out = []
        for t in np.asarray(tokens).tolist():
            if t == recurrent.PAD_ID:
                break
            out.append(vocabulary[t])
            if vocabulary is self.target_vocabulary and t == self.eos_id:
                break
        return out

    @functools.cached_property
    def _decode_and_attend(self):
        def run(variables, source, length):
            decoded = self.decode(variables, source, length)
            if self.model.attention == "none":
                return decoded, None
            weights = self.model.apply({"params": variables["params"]}, source,
                                       self.shift(decoded),
                                       method=recurrent.Seq2Seq.attention_weights)
            return decoded, weights
        return jax.jit(run, static_argnums=2)

    def on_eval(self, context: EvalContext) -> dict[str, dict[str, float]]:
        if not (context.final and context.write_files and self.attention_examples):
            return {}
        name = "test" if "test" in context.eval_splits else context.eval_splits[-1]
        split = context.splits[name]
        rows = split.take(np.arange(min(self.attention_examples, len(split))))
        decoded, weights = self._decode_and_attend(context.variables, rows["inputs"],
                                                   rows["targets"].shape[1])
        lines, panels = [], []
        for i, (source, target, output) in enumerate(zip(rows["inputs"], rows["targets"],
                                                         np.asarray(decoded))):
            src = self.text(source, self.source_vocabulary)
            tgt, out = self.text(target, self.target_vocabulary), self.text(
                output, self.target_vocabulary)
            mark = "ok" if out == tgt else "WRONG"
            lines.append(f"{''.join(src)!r} -> {''.join(out)!r} (target {''.join(tgt)!r}, "
                         f"{mark})")
            if weights is not None:
                panels.append((np.asarray(weights[i])[:len(out), :len(src)], src, out))
        (context.workdir / runs.TRANSLATIONS_TXT).write_text(
            f"=== step {context.step}, {name} split ===\n" + "\n".join(lines) + "\n")
        if panels:
            plots.attention_png(panels, context.workdir / runs.ATTENTION_PNG,
                                title=f"attention weights, {name} split, step {context.step}")
        return {}


def _check_metadata(config, dataset) -> Mapping:
    metadata = dataset.metadata or {}
    missing = [k for k in METADATA if k not in metadata]
    if missing:
        raise ConfigError(f"config.task.name='seq2seq' needs source and target vocabularies; "
                          f"dataset {dataset.name!r} has no {', '.join(missing)} in its "
                          "metadata")
    model = config.model
    for field, key in (("src_vocab_size", "source_vocabulary"),
                       ("tgt_vocab_size", "target_vocabulary")):
        if model.get(field) != len(metadata[key]):
            raise ConfigError(f"config.model.{field}={model.get(field)} but dataset "
                              f"{dataset.name!r} has {len(metadata[key])} {key.split('_')[0]} "
                              "tokens")
    width = dataset.features.shape[1]
    if model.get("max_source_length") is not None and width > model.max_source_length:
        raise ConfigError(f"dataset {dataset.name!r} has sources of length {width}, longer "
                          f"than config.model.max_source_length={model.max_source_length}")
    return metadata


@register_task("seq2seq", task=Seq2SeqTask, fields={
    "beam_width": Field(int, check=positive, help="hypotheses kept while decoding at "
                                                  "evaluation; 1 = greedy"),
    "length_penalty": Field(float, check=non_negative,
                            help="beam search: scores divided by ((5 + length) / 6) ** this "
                                 "(GNMT); 0 = none"),
    "attention_examples": Field(int, check=non_negative,
                                help="test examples decoded after the final evaluation into "
                                     "translations.txt and, with attention, attention.png; "
                                     "0 = none"),
})
def build_seq2seq(config, dataset, *, axis_name) -> Task:
    if config.model.name != "seq2seq":
        raise ConfigError(f"config.task.name='seq2seq' needs model 'seq2seq', got "
                          f"{config.model.name!r}")
    metadata = _check_metadata(config, dataset)
    if metadata["pad_id"] != recurrent.PAD_ID:
        raise ConfigError(f"dataset {dataset.name!r} pads with id {metadata['pad_id']}; the "
                          f"seq2seq model pads with {recurrent.PAD_ID}")
    task = config.task
    return Seq2SeqTask(model=build_model_from_config(config, axis_name=axis_name),
                       source_vocabulary=tuple(metadata["source_vocabulary"]),
                       target_vocabulary=tuple(metadata["target_vocabulary"]),
                       bos_id=metadata["bos_id"], eos_id=metadata["eos_id"],
                       beam_width=task.beam_width, length_penalty=task.length_penalty,
                       attention_examples=task.attention_examples)
