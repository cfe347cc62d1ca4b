"""Fused steering kernels, installed as ``pas_kernels``.

Each operation is written once in plain torch (the *reference*) and compiled with
``torch.compile`` (inductor: C++ on the CPU, generated GPU code on CUDA; no
hand-written Triton). The compiled version is used unless ``PAS_COMPILE=0`` or
compilation fails, in which case the reference runs. Shapes are marked dynamic, so a
new batch size or sequence length does not trigger a recompile.
"""

from .compile import compile_enabled, compiled
from .ops import (add_gated_offsets, add_gated_offsets_reference, add_head_offsets, add_head_offsets_reference,
                  add_row_bias, add_row_bias_reference, silu_mlp_letters, silu_mlp_letters_reference)
from .probes import batched_logistic_accuracies, fit_logistic, many_subject_accuracies, tie_aware_accuracy

__all__ = [
    "add_gated_offsets", "add_gated_offsets_reference", "add_head_offsets", "add_head_offsets_reference",
    "add_row_bias", "add_row_bias_reference", "silu_mlp_letters", "silu_mlp_letters_reference",
    "batched_logistic_accuracies", "compile_enabled", "compiled", "fit_logistic", "many_subject_accuracies",
    "tie_aware_accuracy",
]
