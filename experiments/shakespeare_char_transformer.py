"""Character-level decoder-only Transformer on Shakespeare's works, next to the LSTM.

Command:
    python -m experiments.shakespeare_char_transformer --workdir=runs/shakespeare_transformer

The same data, windows, batch, steps, optimizer and schedule as
`experiments/shakespeare_char_lstm.py` (its CPU variant: 2,000 steps of 32 windows of 64
characters, Adam 2e-3 with 100 warmup steps and a cosine decay, clip 1.0), with the model
swapped for `transformer_lm` at about the LSTM's parameter count: 4 pre-LayerNorm blocks
of width 80 (4 heads of 20, MLP 320), rotary positions, tied embeddings, context window 64.
The architecture was fixed before any run (a GPT-2 layout narrowed to the LSTM's
parameter count); nothing was tuned, on validation or on test, and both runs report their
last step (the best on validation too).

Expected result (measured 2026-12-07 on the 2-core AMD EPYC CPU dev machine, no GPU, jax
0.10.2, pmap over 2 host devices, shared with other jobs at a load average of ~16-20),
beside the LSTM's run of the same recipe (its docstring; same machine, load ~11):

    model        params   bits/char val  bits/char test  accuracy val/test  loop     command
    LSTM         320,212  2.4939         2.4956          0.491 / 0.497      588 s    662 s
    Transformer  318,240  2.3175         2.3448          0.524 / 0.519      1,927 s  2,122 s

The Transformer is ahead from its second evaluation on (validation 2.822 / 2.468 / 2.346
/ 2.318 bits per character at steps 500 / 1,000 / 1,500 / 2,000; the LSTM 2.864 / 2.596 /
2.510 / 2.494). The wall times are not a speed comparison: the machine was about twice
as loaded during this run (33 windows/s, 792 s of the loop waiting for input). Timed side
by side on random windows of 64 (`python -m benchmarks.suite --models
lstm_lm,transformer_lm`, benchmarks/README.md; same machine, load 5-7, pmap over 2 host
devices): 145 windows/s for the Transformer, 261 for the LSTM.
The sample after the last evaluation (`samples.txt`, temperature 0.8, seed 0; prompt and
300 characters, longer than the 64-character window, which slides):

    ROMEO.
    And should out do false, and I was the readom of bagger,
    A love twenty herefore the world of the discorn you,
    Is in the nows to our crown courted it.

    LONUS.
    Who to sake heard, sign of the way,
    Unforbusined!--O myself, some repart and wrother;
    What fits of the boose on she as a names their not to de

The LSTM's, from its run:

    ROMEO.
    You should out do fall or the seave there morn; my gover show here will knef send ...
    Jomby the boin?
    Is notest most not fargurted itnows here, more that not you reget,
    tree what from him, you; and sit tinger of king.

Needs the Shakespeare texts (jaxdl.data.text: data_dir, $JAXDL_DATA_DIR/shakespeare, or the
cache that `python -m jaxdl.data download shakespeare` fills).
"""

import ml_collections

from experiments import shakespeare_char_lstm


def get_config() -> ml_collections.ConfigDict:
    """shakespeare_char_lstm's CPU config with the model swapped for a Transformer."""
    c = shakespeare_char_lstm.get_config("cpu")
    c.model = dict(name="transformer_lm", vocab_size=shakespeare_char_lstm.VOCABULARY,
                   max_len=c.data.options.window, embed_dim=80, num_heads=4, num_layers=4,
                   mlp_dim=320, dropout_rate=0.0, positions="rotary", tie_embeddings=True)
    return c


if __name__ == "__main__":
    from jaxdl import app

    app.run(get_config)
