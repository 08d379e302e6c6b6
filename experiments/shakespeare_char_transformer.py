"""Character-level decoder-only Transformer on Shakespeare's works, next to the LSTM.

Command:
    python -m experiments.shakespeare_char_transformer --workdir=runs/shakespeare_char_transformer

The same data, windows, batch, steps, optimizer and schedule as
`experiments/shakespeare_char_lstm.py` (its CPU variant: 2,000 steps of 32 windows of 64
characters, Adam 2e-3 with 100 warmup steps and a cosine decay, clip 1.0), with the model
swapped for `transformer_lm` at about the LSTM's parameter count: 4 pre-LayerNorm blocks
of width 80 (4 heads of 20, MLP 320), rotary positions, tied embeddings, context window 64.
The architecture was fixed before any run (a GPT-2 layout narrowed to the LSTM's
parameter count); no hyperparameter was tuned, on validation or test.

RESULTS

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
