"""Benchmarks and experiment harnesses for diffexp (see ``benchmark/README.md``).

``benchmark.harness`` runs studies (ablation grids and hyper-parameter searches) defined in
YAML under ``experiments/`` with Optuna for scheduling and MLflow for tracking.
"""
