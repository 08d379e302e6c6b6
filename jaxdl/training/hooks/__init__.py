"""What a run does around its step loop, one concern per module, each a `Hook`
(base.py): checkpointing, early_stopping, nonfinite (the in-flight guard), plateau, ema,
profiling, warm_start, pruning (the sparsity report), plots and summary.
`jaxdl.training.loop.run` calls them at its cadence; they share only the run's `Context`
(jaxdl/training/context.py)."""
