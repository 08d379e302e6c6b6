"""word2vec skip-gram with negative sampling on Shakespeare's works (Mikolov et al. 2013).

Command:
    python -m experiments.shakespeare_word2vec --workdir=runs/shakespeare_word2vec
    python -m jaxdl.analysis neighbours --run runs/shakespeare_word2vec --word king --top 10

Result: not yet measured.

Needs the Shakespeare texts (jaxdl.data.words reads them through jaxdl.data.text: data_dir,
$JAXDL_DATA_DIR/shakespeare, or the cache that `python -m jaxdl.data download shakespeare`
fills).
"""

import ml_collections

# Words seen >= 5 times in the training text (jaxdl.data.words, min_count 5, the last 4%
# of the words held out): the rows of both embedding tables.
VOCABULARY = 8925


def get_config() -> ml_collections.ConfigDict:
    """100-dimensional vectors, 5 negatives, a window of 2 words each side."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = dict(name="word2vec", vocab_size=VOCABULARY, embed_dim=100)
    c.task = dict(name="word2vec", negatives=5, negative_power=0.75, subsample=1e-3,
                  top_k=8, pca_words=150,
                  probe_words=("king", "queen", "love", "night", "sword", "father",
                               "thou", "gold"),
                  analogies=("king - man + woman", "he - him + her", "father - son + daughter",
                             "thou - thee + you", "brother - he + she"))
    # The loader holds out the text's last 2% for test and the 2% before it for
    # validation, so the config's own fractions are 0.
    c.data = dict(name="shakespeare_words", split_seed=0, validation_fraction=0.0,
                  test_fraction=0.0, batch_size=1024, eval_batch_size=4096,
                  augmentation="none",
                  options=dict(window=2, min_count=5, validation_fraction=0.02,
                               test_fraction=0.02))
    c.train = dict(duration="6000 steps", log_every="500 steps", eval_every="2000 steps")
    c.checkpoint = dict(every="2000 steps", keep_last=1, keep_best=1,
                        monitor="validation/loss", mode="min")
    c.optimizer = dict(name="adam", learning_rate=3e-3)
    c.schedule = dict(name="cosine", warmup="200 steps")
    c.precision = "fp32"
    c.parallel = dict(backend="pmap", host_devices=2)
    return c


if __name__ == "__main__":
    from jaxdl import app

    app.run(get_config)
