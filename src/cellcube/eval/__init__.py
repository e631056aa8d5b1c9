"""Evaluation on the held-out test split: similarity, retrieval metrics, reports."""
