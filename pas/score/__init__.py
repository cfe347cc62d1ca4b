"""Scoring questionnaires: prompts, the item scorer (option distributions), many people per pass, the PAPI metric,
inventory scales."""
