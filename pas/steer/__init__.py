"""Steering: the vector (what is applied), its file, hooks, folding, the position rule, per-row steering, chat,
fluency."""
