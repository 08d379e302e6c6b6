"""Hyperparameter search and cross-validation over ordinary jaxdl runs: grids, Optuna
search with pruning, k-fold and seed repeats, a learning-rate range test, and a results
table (`python -m jaxdl.sweep`; see __main__.py). Imports nothing at package import."""
