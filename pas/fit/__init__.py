"""Fitting one person's vector: activations, probes and directions, strength search, learning, readout, gated
fitting, align."""
