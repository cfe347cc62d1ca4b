"""Serving: an OpenAI-compatible chat API where each request names its person, batched with per-row steering."""
