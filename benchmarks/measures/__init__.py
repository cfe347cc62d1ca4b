"""Measurement-only code used by the benchmarks (not part of the library): consistency checks, tables and figures."""
