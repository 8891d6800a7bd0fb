"""Hyper-parameter search on Optuna (``hydradgl tune``); Optuna is imported only when a search runs."""
