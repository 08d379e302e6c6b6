"""Nearest neighbours of a word in a word2vec run: the cosine neighbours of its center
vector among the vectors the run exported (`vectors.txt`, word2vec text format; the
`word2vec` task writes it at the final evaluation). Reads no checkpoint and no data."""

from __future__ import annotations

from pathlib import Path

from jaxdl import runs
from jaxdl.schema import ConfigError
from jaxdl.tasks import word2vec


def analyse(run_dir: str | Path, *, word: str, top: int) -> dict:
    """{'word', 'vectors', 'neighbours': [[word, cosine], ...]} (best first). ConfigError
    (one line) when the run has no vectors or the word is not in them (naming the nearest
    spellings)."""
    if top < 1:
        raise ConfigError(f"--top={top}: must be >= 1")
    path = Path(run_dir) / runs.VECTORS_TXT
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no {runs.VECTORS_TXT} (a word2vec run writes it at its "
                          "final evaluation)")
    words, vectors = word2vec.read_vectors(path)
    found = word2vec.neighbours(vectors, words, word, top, where=str(path))
    return {"word": word, "vectors": str(path), "neighbours": [[w, s] for w, s in found]}


def lines(report: dict) -> list[str]:
    """The report as printed: one 'word  cosine' line per neighbour."""
    return [f"{w}\t{s:.4f}" for w, s in report["neighbours"]]
