"""Measuring one task: model and tokenizer building, generated inputs, the profiled Runner.

Knows nothing of MPI.
"""
