"""Downstream evaluation with lm-evaluation-harness: the model adapter and the tasks."""
