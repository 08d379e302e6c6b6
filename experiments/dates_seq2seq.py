"""Date-format translation with an LSTM encoder-decoder and additive attention.

The `dates` source (jaxdl/data/dates.py) writes calendar dates from 1900 to 2099 in 11
formats ('12 March 1987', 'Thursday, March 12, 1987', '12.03.1987', '12-MAR-1987', ...)
and asks for ISO 8601 ('1987-03-12'), character by character. RESULTS PENDING.

Command (with attention, then the same config without it):
    python -m experiments.dates_seq2seq --workdir=runs/dates_seq2seq
    python -m experiments.dates_seq2seq --workdir=runs/dates_seq2seq_none \\
        --config.model.attention=none
"""

import ml_collections

from jaxdl.data import dates

EXAMPLES = 20000


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = dict(name="seq2seq", src_vocab_size=len(dates.SOURCE_VOCABULARY),
                   tgt_vocab_size=len(dates.TARGET_VOCABULARY), embed_dim=32, hidden_size=64,
                   num_layers=1, cell="lstm", dropout_rate=0.0, attention="additive",
                   max_source_length=40)
    c.task = dict(name="seq2seq", beam_width=1, length_penalty=0.0, attention_examples=4)
    c.data = dict(name="dates", split_seed=0, validation_fraction=0.1, test_fraction=0.1,
                  batch_size=64, eval_batch_size=500, augmentation="none",
                  options=dict(examples=EXAMPLES, seed=0))
    c.train = dict(duration="5 epochs", log_every="100 steps", eval_every="1 epoch")
    c.checkpoint = dict(every="1 epoch", keep_last=1, keep_best=1,
                        monitor="validation/sequence_accuracy", mode="max")
    c.optimizer = dict(name="adam", learning_rate=3e-3, grad_clip_norm=1.0)
    c.schedule = dict(name="cosine")
    c.precision = "fp32"
    c.parallel = dict(backend="pmap", host_devices=2)
    return c


if __name__ == "__main__":
    from jaxdl import app

    app.run(get_config)
