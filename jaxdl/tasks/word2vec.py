"""word2vec: skip-gram with negative sampling (Mikolov et al. 2013, "Distributed
Representations of Words and Phrases and their Compositionality").

An example is one (center, context) pair of word ids (`jaxdl.data.words`). Its loss is

    -log sigma(u_context . v_center) - sum_k log sigma(-u_k . v_center)

over `negatives` words k drawn from the unigram distribution raised to `negative_power`
(0.75 in the paper) of the training counts; a negative that is the context word itself
adds nothing (as in the reference C code). Frequent words are subsampled with the paper's
formula: a word w of frequency f(w) is kept with probability min(1, sqrt(t / f(w))), t =
`subsample` (0 keeps every word).

Both draws happen on the device, inside the compiled step, keyed per example: negatives
from fold_in(fold_in(step key, stream), row) through a search of the cumulative table,
the subsampling as two uniforms per pair (one for the center, one for the context) from
another stream. `row` is the example's row in the global batch, so the numbers are a pure
function of (seed, step, row) and do not depend on the device count or the backend. The
pairs are fixed on the host; a pair is kept when both its words are, which each word's
occurrence in the text would be with the same probabilities (drawn afresh at every step,
so each epoch sees another subsample, as each pass of word2vec does). A dropped pair stays
in the batch with weight 0: `loss` is the batch mean of kept * pair loss (so the gradient
mean is over a fixed count, the same on every device count), `kept` the fraction kept and
`pair_loss` the loss of every pair unweighted. An evaluation weights each held-out pair
by its expected keep probability instead of a draw, so validation `loss` estimates the
same objective as the training one, deterministically (its negatives come from the
evaluation's fixed key).

After the final evaluation the process that writes files exports the center vectors in
the word2vec text format (`vectors.txt`: a line "V D", then "word v1 ... vD" per word,
most frequent first), writes `neighbours.txt` (the `top_k` cosine neighbours of each of
`probe_words`, and the `top_k` answers of each of `analogies`, "a - b + c") and a 2-D PCA
projection of the `pca_words` most frequent words (`words_pca.png`).
`python -m jaxdl.analysis neighbours --run DIR --word W` reads `vectors.txt` back.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import plots, runs
from jaxdl.models.layers import fold_rows
from jaxdl.schema import ConfigError, Field, non_negative, positive
from jaxdl.tasks.base import Task, build_model_from_config, example_rows, register_task

VECTORS = runs.VECTORS_TXT
NEIGHBOURS = runs.NEIGHBOURS_TXT
WORDS_PNG = runs.WORDS_PCA_PNG
# Named streams folded into the step key (a hash, as `base.model_rngs` names its streams),
# so neither shares keys with dropout or augmentation.
NEGATIVES_STREAM = zlib.crc32(b"word2vec/negatives") & 0x7FFFFFFF
SUBSAMPLE_STREAM = zlib.crc32(b"word2vec/subsample") & 0x7FFFFFFF
_ANALOGY = re.compile(r"^\s*(\S+)\s*-\s*(\S+)\s*\+\s*(\S+)\s*$")


# --- the two distributions, on the host --------------------------------------------------


def keep_probabilities(counts: np.ndarray, threshold: float) -> np.ndarray:
    """P(keep w) = min(1, sqrt(t / f(w))), f(w) = count / total (Mikolov et al. 2013, eq. 5
    gives the discard probability 1 - sqrt(t / f)); every word kept when t = 0."""
    counts = np.asarray(counts, np.float64)
    if threshold <= 0:
        return np.ones(len(counts), np.float32)
    frequency = counts / counts.sum()
    return np.minimum(1.0, np.sqrt(threshold / frequency)).astype(np.float32)


def negative_cdf(counts: np.ndarray, power: float) -> np.ndarray:
    """The cumulative distribution of count ** power over the vocabulary (float32, its
    last entry exactly 1)."""
    weights = np.asarray(counts, np.float64) ** power
    cdf = np.cumsum(weights / weights.sum())
    cdf[-1] = 1.0
    return cdf.astype(np.float32)


# --- the two draws, on the device --------------------------------------------------------


def draw_negatives(key: jax.Array, rows: jax.Array, cdf: jax.Array, count: int) -> jax.Array:
    """[len(rows), count] word ids, example i's drawn from fold_in(key, rows[i]): uniform
    numbers located in the cumulative table, so P(w) = cdf[w] - cdf[w - 1]."""
    uniforms = jax.vmap(lambda k: jax.random.uniform(k, (count,)))(fold_rows(key, rows))
    ids = jnp.searchsorted(cdf, uniforms, side="right")
    return jnp.minimum(ids, cdf.shape[0] - 1).astype(jnp.int32)


def draw_kept(key: jax.Array, rows: jax.Array, keep: jax.Array, centers: jax.Array,
              contexts: jax.Array) -> jax.Array:
    """[len(rows)] 1.0 where the pair survives subsampling (both words kept), else 0.0."""
    uniforms = jax.vmap(lambda k: jax.random.uniform(k, (2,)))(fold_rows(key, rows))
    return ((uniforms[:, 0] < keep[centers]) & (uniforms[:, 1] < keep[contexts])).astype(
        jnp.float32)


# --- the task ------------------------------------------------------------------------------


# eq=False: the generated __eq__ and __hash__ would compare the arrays elementwise.
@dataclasses.dataclass(frozen=True, eq=False)
class Word2VecTask(Task):
    model: nn.Module
    vocabulary: tuple[str, ...]  # id -> word, most frequent first
    keep: np.ndarray  # [V] P(keep) of each word
    cdf: np.ndarray  # [V] cumulative negative-sampling distribution
    negatives: int
    top_k: int
    probe_words: tuple[str, ...]
    analogies: tuple[tuple[str, str, str], ...]
    pca_words: int
    monitor: str = "loss"
    monitor_mode: str = "min"

    @classmethod
    def metric_names(cls, task_config):
        return ("loss", "pair_loss", "kept")

    def apply(self, variables, batch, *, train, rng):
        centers, contexts = batch["inputs"], batch["targets"]
        rows = example_rows(batch)
        if rows is None:
            rows = jnp.arange(centers.shape[0], dtype=jnp.int32)
        keep = jnp.asarray(self.keep)
        negatives = draw_negatives(jax.random.fold_in(rng, NEGATIVES_STREAM), rows,
                                   jnp.asarray(self.cdf), self.negatives)
        candidates = jnp.concatenate([contexts[:, None], negatives], axis=1)
        logits = self.model.apply(variables, centers, candidates, train=train)
        real = (negatives != contexts[:, None]).astype(jnp.float32)
        pair_loss = (-jax.nn.log_sigmoid(logits[:, 0])
                     - jnp.sum(real * jax.nn.log_sigmoid(-logits[:, 1:]), axis=1))
        if train:
            weight = draw_kept(jax.random.fold_in(rng, SUBSAMPLE_STREAM), rows, keep,
                               centers, contexts)
        else:
            weight = keep[centers] * keep[contexts]
        values = {"loss": weight * pair_loss, "pair_loss": pair_loss, "kept": weight}
        return values, {k: v for k, v in variables.items() if k != "params"}

    def on_eval(self, context):
        if not (context.write_files and context.final):
            return {}
        vectors = np.asarray(context.variables["params"]["center"], np.float32)
        write_vectors(context.workdir / VECTORS, self.vocabulary, vectors)
        report = [f"step {context.step}: cosine neighbours of the center vectors"]
        for word in self.probe_words:
            found = neighbours(vectors, self.vocabulary, word, self.top_k)
            report.append(f"{word}: " + ", ".join(f"{w} {s:.3f}" for w, s in found))
        for a, b, c in self.analogies:
            found = analogy(vectors, self.vocabulary, a, b, c, self.top_k)
            report.append(f"{a} - {b} + {c}: " + ", ".join(f"{w} {s:.3f}" for w, s in found))
        (context.workdir / NEIGHBOURS).write_text("\n".join(report) + "\n")
        if self.pca_words:
            shown = min(self.pca_words, len(self.vocabulary))
            plots.words_png(pca_2d(vectors[:shown]), self.vocabulary[:shown],
                            context.workdir / WORDS_PNG,
                            title=f"the {shown} most frequent words, step {context.step}")
        return {}


# --- what a trained embedding answers (the task's report and `jaxdl.analysis`) ----------


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.finfo(np.float32).tiny)


def nearest(vectors: np.ndarray, words: Sequence[str], query: np.ndarray, top: int,
            exclude: Sequence[str] = ()) -> list[tuple[str, float]]:
    """The `top` words whose vectors have the highest cosine with `query`, best first
    (ties by id), leaving out `exclude`."""
    cosines = unit_rows(vectors) @ (query / max(np.linalg.norm(query), 1e-30))
    order = np.argsort(-cosines, kind="stable")
    left_out = set(exclude)
    return [(words[i], float(cosines[i])) for i in order if words[i] not in left_out][:top]


def word_id(words: Sequence[str], word: str, where: str) -> int:
    """The id of `word`; ConfigError naming the nearest spellings when it has none."""
    try:
        return list(words).index(word)
    except ValueError:
        close = difflib.get_close_matches(word, words, n=5)
        raise ConfigError(f"{word!r} is not in the vocabulary of {where}; nearest spellings: "
                          f"{', '.join(close) if close else 'none'}") from None


def neighbours(vectors, words, word: str, top: int, *, where: str = "the run"
               ) -> list[tuple[str, float]]:
    """The `top` cosine neighbours of `word`, itself left out."""
    return nearest(vectors, words, vectors[word_id(words, word, where)], top, exclude=[word])


def analogy(vectors, words, a: str, b: str, c: str, top: int, *, where: str = "the run"
            ) -> list[tuple[str, float]]:
    """The `top` words nearest to a - b + c (of unit vectors, as Mikolov et al.), the
    three asked about left out."""
    unit = unit_rows(vectors)
    query = sum(sign * unit[word_id(words, w, where)] for sign, w in ((1, a), (-1, b), (1, c)))
    return nearest(vectors, words, query, top, exclude=[a, b, c])


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """[N, 2]: the first two principal components (scikit-learn's PCA)."""
    from sklearn.decomposition import PCA  # seconds to import: only when a plot is drawn

    return PCA(n_components=2, svd_solver="full").fit_transform(np.asarray(vectors,
                                                                           np.float64))


def write_vectors(path: Path, words: Sequence[str], vectors: np.ndarray) -> Path:
    """The word2vec text format: "V D", then one line "word v1 ... vD" per word."""
    vectors = np.asarray(vectors, np.float32)
    if vectors.shape[0] != len(words):
        raise ValueError(f"{len(words)} words but {vectors.shape[0]} vectors")
    lines = [f"{vectors.shape[0]} {vectors.shape[1]}"]
    lines += [word + " " + " ".join(f"{x:.6g}" for x in row) for word, row in zip(words, vectors)]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def read_vectors(path: Path) -> tuple[list[str], np.ndarray]:
    """(words, vectors [V, D] float32) of a word2vec text file; ConfigError (one line) when
    it is not one."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
        count, dim = (int(x) for x in lines[0].split())
        words, rows = [], []
        for line in lines[1:count + 1]:
            word, *values = line.split(" ")
            if len(values) != dim:
                raise ValueError(f"{word!r} has {len(values)} values, not {dim}")
            words.append(word)
            rows.append([float(v) for v in values])
        if len(words) != count:
            raise ValueError(f"the header says {count} words, the file holds {len(words)}")
    except (OSError, ValueError, IndexError) as e:
        raise ConfigError(f"{path}: not a word2vec text file ({e})") from None
    return words, np.asarray(rows, np.float32).reshape(count, dim)


def parse_analogy(text: str) -> tuple[str, str, str]:
    match = _ANALOGY.match(text)
    if match is None:
        raise ConfigError(f"analogy {text!r}: write 'a - b + c'")
    return match.group(1), match.group(2), match.group(3)


def _analogy_check(value) -> str | None:
    return None if _ANALOGY.match(value) else "must read 'a - b + c'"


@register_task("word2vec", task=Word2VecTask, fields={
    "negatives": Field(int, check=positive, help="negative samples per pair (Mikolov et al.: "
                                                 "5-20 for small data, 2-5 for large)"),
    "negative_power": Field(float, check=positive, help="negatives are drawn from the unigram "
                                                        "counts to this power (paper: 0.75)"),
    "subsample": Field(float, check=non_negative, help="t of the subsampling of frequent "
                                                       "words: P(keep) = min(1, sqrt(t / f)); "
                                                       "0 = keep every word"),
    "top_k": Field(int, check=positive, help="neighbours and analogy answers reported"),
    "probe_words": Field(tuple, items=str, default=(), help="words whose neighbours the final "
                                                            "evaluation reports"),
    "analogies": Field(tuple, items=str, default=(), check=_analogy_check,
                       help="'a - b + c' questions the final evaluation answers"),
    "pca_words": Field(int, default=0, check=non_negative,
                       help="the most frequent words drawn in words_pca.png (0 = no plot)"),
})
def build_word2vec(config, dataset, *, axis_name) -> Task:
    metadata = dataset.metadata or {}
    if "vocabulary" not in metadata or "counts" not in metadata:
        raise ConfigError(f"config.task.name='word2vec' needs a word vocabulary and its "
                          f"counts; dataset {dataset.name!r} has none in its metadata")
    vocabulary = tuple(metadata["vocabulary"])
    if config.model.get("vocab_size") != len(vocabulary):
        raise ConfigError(f"config.model.vocab_size={config.model.get('vocab_size')} but "
                          f"dataset {dataset.name!r} has {len(vocabulary)} words")
    task = config.task
    analogies = tuple(parse_analogy(text) for text in task.analogies)
    where = f"dataset {dataset.name!r}"
    for word in (*task.probe_words, *(w for question in analogies for w in question)):
        word_id(vocabulary, word, where)  # refused here, before anything is written
    counts = np.asarray(metadata["counts"])
    return Word2VecTask(model=build_model_from_config(config, axis_name=axis_name),
                        vocabulary=vocabulary,
                        keep=keep_probabilities(counts, task.subsample),
                        cdf=negative_cdf(counts, task.negative_power),
                        negatives=task.negatives, top_k=task.top_k,
                        probe_words=tuple(task.probe_words), analogies=analogies,
                        pca_words=task.pca_words)
