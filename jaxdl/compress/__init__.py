"""Smaller models from a trained run, and what they cost in accuracy and time:

  quantize   post-training int8 quantization through Qwix: per-channel int8 weights,
             int8 activations with static scales calibrated on training batches
  report     fp32 / bf16 / int8 rows: parameters, non-zeros, bytes, accuracy on a split,
             the latency of one batch; `python -m jaxdl.compress report --run DIR`

Above `jaxdl.trained` (a run is loaded through it and evaluated by its own compiled eval
step), below the app: library code here reads no flags.
"""
