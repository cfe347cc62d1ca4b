"""Evaluation: the one method registry (methods, yardsticks), the DPO baseline, the one run loop with its typed
records and their fingerprints (what each depended on), reports."""
