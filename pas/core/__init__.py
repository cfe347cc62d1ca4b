"""Foundations: PAPI data (item bank, subjects, the one keyed-score conversion), the architecture registry,
model loading."""
