"""Policies: the documents (model), their compiled index (match), where they live (store),
and how every worker keeps its in-memory snapshot current (sync)."""
