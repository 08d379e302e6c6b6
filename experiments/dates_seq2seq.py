"""Date-format translation with an LSTM encoder-decoder, with and without attention.

The `dates` source (jaxdl/data/dates.py) writes calendar dates from 1900 to 2099 in 11
formats ('12 March 1987', 'Thursday, March 12, 1987', '12.03.1987', '12-MAR-1987', ...)
and asks for ISO 8601 ('1987-03-12'), character by character: 20,000 distinct (date,
format) pairs (seed 0), split 80/10/10 (split_seed 0). Embedding 32, one LSTM layer of 64
units for the encoder and one for the decoder, additive (Bahdanau) attention over the
encoder's outputs, Luong's attentional output layer; teacher forcing, Adam 3e-3 with
cosine decay, clip 1.0, batch 64, 5 epochs = 1,250 steps. Evaluation decodes greedily
from the begin token alone; `sequence_accuracy` counts a date right only if every
character and the end are right. After the final evaluation the run writes
`translations.txt` and `attention.png` (the attention weights of 4 test examples).

Commands (additive attention; the same config without attention; with dot-product
attention; without attention, decoded by beam search of width 4):
    python -m experiments.dates_seq2seq --workdir=runs/dates_seq2seq
    python -m experiments.dates_seq2seq --workdir=runs/dates_seq2seq_none \\
        --config.model.attention=none
    python -m experiments.dates_seq2seq --workdir=runs/dates_seq2seq_dot \\
        --config.model.attention=dot
    python -m experiments.dates_seq2seq --workdir=runs/dates_seq2seq_none_beam4 \\
        --config.model.attention=none --config.task.beam_width=4

Measured 2026-12-07 on the 2-core AMD EPYC CPU dev machine, no GPU, jax 0.10.2, pmap over
2 host devices, with other jobs sharing the two cores (load average 9-15); 2,000 test and
2,000 validation dates, after 1,250 steps:

    attention           test exact  test token  validation exact  loop   command
    additive            0.9995      0.9999      1.0000            63 s   86 s
    dot                 1.0000      1.0000      1.0000            45 s   80 s
    none                0.7270      0.9407      0.7230            47 s   63 s
    none, beam width 4  0.7765      0.9529      0.7740            38 s   58 s

With attention, validation exact-sequence accuracy is 0.9990 after the first epoch and
1.0000 from the second on; the best checkpoint (step 500) scores 1.0000 on the test split
(the final one misses 1 of 2,000). Without attention the same network, reading the source
only through the encoder's final state, climbs slowly (validation 0.021, 0.299, 0.575,
0.702, 0.723 after each epoch) and gets most single characters right but 27% of the dates
wrong; beam search (the same trained weights, as the identical validation loss shows:
only the evaluation differs) gets 5 points more of them. Dot-product attention is at
0.9935 after one epoch and 1.0000 on test. The command times above had the XLA
compilation cache warm for the first two rows (compile 4.4 s / 2.3 s; dot and beam
compiled anew, 17.0 s / 6.3 s); the first, cold runs of the first two configs took 175 s /
138 s of loop and 27 s / 76 s of compile at load 11-19, with identical metrics (runs are
deterministic).
"""

import ml_collections

from jaxdl.data import dates

EXAMPLES = 20000
# Room above the longest source any format writes ('Wednesday, September 30, 2099': 29).
MAX_SOURCE = 40


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = dict(name="seq2seq", src_vocab_size=len(dates.SOURCE_VOCABULARY),
                   tgt_vocab_size=len(dates.TARGET_VOCABULARY), embed_dim=32, hidden_size=64,
                   num_layers=1, cell="lstm", dropout_rate=0.0, attention="additive",
                   max_source_length=MAX_SOURCE)
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
