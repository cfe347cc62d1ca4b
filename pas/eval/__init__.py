"""Evaluation: the method registry, the DPO baseline, the one run loop and its records, reports."""
