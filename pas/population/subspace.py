"""The pas-gated calibration at population speed: the last layer computed in the gates' own few dimensions.

A pas-gated vector (:mod:`pas.fit.gated`) changes an item's answer through the constant letter
correction on the layer below the gated one (the same for everyone) and the gated layer's gates
``g_h = w_h . x_h + b_h``, one number per head, each scaling that head's fixed push. When the gated
layer is the last one, the gates act after its attention: under the correction, an item's residual
stream right after that attention is a fixed ``r`` plus ``U^T g`` (``U [H, hidden]``: each push
through the output projection). What remains is the last layer's MLP, the final norm and the
letters; for the Llama family (RMS norms, a gated MLP, an output layer without bias) every part
that touches the full width is linear in ``r`` and ``g``, so it is precomputed per item:

- the MLP norm's scale, from ``|r|^2``, ``U r`` and ``U U^T`` (H numbers);
- the MLP's gate and up projections of the normed input: ``a_i + B g`` (H columns instead of ``hidden``);
- the letters' unnormalised logits: ``W_L diag(w_f) (r + U^T g + W_down h)``, with ``W_L diag(w_f) W_down``
  a ``[5, F]`` matrix, so ``W_down`` (the widest product) is not needed for the answers at all.

Answers (argmax) are invariant to the final norm's scale, so they come out exact at a small cost per
row. The expected answers, which calibration needs only to break ties of the composite, use the
exact final scale, computed with ``W_down`` for the tied settings alone. Nothing is approximated:
calibration chooses what the exact steered passes choose, up to float rounding (tested against them).
The MLP must use SiLU (the fused kernel's activation). Families whose last layer is not of this form
have no fast path (:func:`supports`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch

from pas.core.arch import last_block_tail, layout
from pas.fit.gated import NEUTRAL
from pas.score.scorer import ItemScorer, encode_prompts, last_step
from pas.steer.fold import output_shift
from pas.steer.hooks import record_head_outputs
from pas.steer.position import steer
from pas.steer.signature import ModelSignature
from pas.steer.vector import SteeringVector
from pas_kernels import silu_mlp_letters

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def supports(model: PreTrainedModel, layer: int) -> str | None:
    """None when the fast path applies to ``model`` with gates on ``layer``; else the reason it does not."""
    lay = layout(model)
    if layer != lay.n_layers - 1:
        return f"the gated layer ({layer}) is not the last one ({lay.n_layers - 1})"
    tail = last_block_tail(model)
    if tail is None:
        return f"{lay.model_type} declares no post-attention tail (pas.core.arch.AttnOutSpec.tail)"
    head = model.get_output_embeddings()
    mlp: Any = tail.mlp
    norms_ok = all(hasattr(n, "variance_epsilon") and hasattr(n, "weight") for n in (tail.mlp_norm, tail.final_norm))
    linear = [getattr(mlp, name, None) for name in ("gate_proj", "up_proj", "down_proj")]
    if not norms_ok or not all(isinstance(x, torch.nn.Linear) and x.bias is None for x in linear):
        return f"{lay.model_type}'s last layer is not RMS norms around a gated MLP without biases"
    if not _is_silu(getattr(mlp, "act_fn", None)):
        return f"{lay.model_type}'s last MLP does not use SiLU (the fused kernel's activation)"
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        return "the output layer is not a linear layer without bias"
    return None


@dataclass(frozen=True)
class GateSubspace:
    """Per short-form item ``n`` (see the module docstring): what the gates read, ``states [N, H, D]``, and
    the last layer's tensors restricted to the gates' span. Float32, as the model computes."""

    states: torch.Tensor  # [N, H, D]
    residual: torch.Tensor  # [N, hidden]  r: after the gated layer's attention, under the correction
    pushes: torch.Tensor  # [H, hidden]  U
    r_sq: torch.Tensor  # [N]
    r_u: torch.Tensor  # [N, H]
    u_u: torch.Tensor  # [H, H]
    a_mlp: torch.Tensor  # [N, 2F]: the gate and up projections of the normed r (unscaled), side by side
    b_mlp: torch.Tensor  # [H, 2F]: the same of each push
    letters_r: torch.Tensor  # [N, 5]
    letters_u: torch.Tensor  # [H, 5]
    letters_h: torch.Tensor  # [5, F]
    down: torch.Tensor  # [F, hidden]  W_down^T
    final_weight: torch.Tensor  # [hidden]
    mlp_eps: float
    final_eps: float

    def readouts(self, rows: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``[P, n, H]``: each head's readout ``x_h . w_h + b_h`` on items ``rows`` for per-person ``weights [P, H,
        D]`` and ``bias [P, H]``."""
        return torch.einsum("nhd,phd->pnh", self.states[rows], weights) + bias[:, None, :]

    def _hidden(self, rows: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """The MLP's hidden activations ``[M, n, F]`` of items ``rows`` under gates ``[M, n, H]`` (few rows: the
        tied settings; the grid goes through :meth:`raw_letters_grid`)."""
        half = self.b_mlp.shape[-1] // 2
        pre = (self.a_mlp[rows] + gates @ self.b_mlp) * self._scale(rows, gates)[..., None]
        return torch.nn.functional.silu(pre[..., :half]) * pre[..., half:]

    def raw_letters_grid(self, rows: torch.Tensor, reads: torch.Tensor, gains: torch.Tensor,
                         shifts: torch.Tensor) -> torch.Tensor:
        """``[P, G, S, n, 5]``: :meth:`raw_letters` of items ``rows`` at every gain and shift, the gates being
        ``(gain * (reads - NEUTRAL) + shift) / H`` (:func:`pas.fit.gated.readout_gates`) for head readouts ``reads
        [P, n, H]``. The grid's structure saves the per-row product with ``B``: ``a + B g = (a + shift B 1 / H) +
        gain (B (reads - NEUTRAL) / H)``; the MLP's hidden units and their letters are one fused kernel
        (:func:`pas_kernels.silu_mlp_letters`), the fast path's whole cost."""
        n_heads = reads.shape[-1]
        d = (reads - NEUTRAL) / n_heads  # [P, n, H]
        gates = gains[None, :, None, None, None] * d[:, None, None] + shifts[None, None, :, None, None] / n_heads
        base = self.a_mlp[rows] + (shifts / n_heads)[:, None, None] * self.b_mlp.sum(0)  # [S, n, 2F]
        from_hidden = silu_mlp_letters(base, d @ self.b_mlp, gains, self._scale(rows, gates), self.letters_h)
        return self.letters_r[rows] + gates @ self.letters_u + from_hidden

    def _scale(self, rows: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """The MLP norm's scale of items ``rows`` under ``gates [..., n, H]``, from ``|r + U^T g|^2`` in H numbers."""
        r_u = self.r_u[rows]
        square = self.r_sq[rows] + 2 * (gates * r_u).sum(-1) + ((gates @ self.u_u) * gates).sum(-1)
        return torch.rsqrt(square / self.residual.shape[-1] + self.mlp_eps)

    def raw_letters(self, rows: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """``[M, n, 5]``: the letters' logits before the final norm's (positive) scale: the answers, exactly."""
        return self.letters_r[rows] + gates @ self.letters_u + self._hidden(rows, gates) @ self.letters_h.T

    def letters(self, rows: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """``[M, n, 5]``: the letters' logits, final norm included (the full width's product: for few rows)."""
        h = self._hidden(rows, gates)
        final = self.residual[rows] + gates @ self.pushes + h @ self.down
        scale = torch.rsqrt(final.pow(2).mean(-1, keepdim=True) + self.final_eps)
        return scale * (self.letters_r[rows] + gates @ self.letters_u + h @ self.letters_h.T)


@torch.no_grad()
def gate_subspace(scorer: ItemScorer, ids: Sequence[int], layer: int, tilt: torch.Tensor,
                  correction: torch.Tensor) -> GateSubspace:
    """The :class:`GateSubspace` of items ``ids`` for pushes ``tilt [H, D]`` on ``layer`` (the last) and the
    ``correction`` on the layer below; raises ValueError where :func:`supports` says no."""
    model = scorer.model
    reason = supports(model, layer)
    if reason is not None:
        raise ValueError(f"the fast calibration does not apply: {reason}; use calibration='exact'")
    tail = last_block_tail(model)
    assert tail is not None  # supports() checked it
    lay = layout(model)
    states, residual = corrected_states(scorer, ids, layer, correction)
    per_head = torch.zeros(lay.n_heads, lay.n_layers, lay.n_heads, lay.head_dim)
    for h in range(lay.n_heads):
        per_head[h, layer, h] = tilt[h]
    pushes = torch.stack([output_shift(model, o)[layer] for o in per_head])  # [H, hidden]
    mlp: Any = tail.mlp  # supports() checked its parts
    w_norm, w_final = _f32(tail.mlp_norm, "weight"), _f32(tail.final_norm, "weight")
    gate, up, down = _f32(mlp.gate_proj, "weight"), _f32(mlp.up_proj, "weight"), _f32(mlp.down_proj, "weight")
    letters = _f32(model.get_output_embeddings(), "weight")[list(scorer.letter_ids)[:5]] * w_final  # [5, hidden]
    return GateSubspace(
        states=states, residual=residual, pushes=pushes,
        r_sq=residual.pow(2).sum(-1), r_u=residual @ pushes.T, u_u=pushes @ pushes.T,
        a_mlp=(residual * w_norm) @ torch.cat([gate, up]).T, b_mlp=(pushes * w_norm) @ torch.cat([gate, up]).T,
        letters_r=residual @ letters.T, letters_u=pushes @ letters.T, letters_h=letters @ down,
        down=down.T.contiguous(), final_weight=w_final,
        mlp_eps=_eps(tail.mlp_norm), final_eps=_eps(tail.final_norm))


def _is_silu(act: object) -> bool:
    """Whether ``act`` computes SiLU: torch's module, or transformers' (its ``silu`` activation)."""
    return isinstance(act, torch.nn.SiLU) or type(act).__name__ == "SiLUActivation"


def _eps(norm: torch.nn.Module) -> float:
    return float(cast(Any, norm).variance_epsilon)


def _f32(module: torch.nn.Module, name: str) -> torch.Tensor:
    return cast(torch.Tensor, getattr(module, name)).detach().float().cpu()


@torch.no_grad()
def corrected_states(scorer: ItemScorer, ids: Sequence[int], layer: int,
                     correction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Under the correction on ``layer - 1``: the gated (last) layer's head outputs ``[N, H, D]`` at the answer
    position (what the gates read) and the residual right after its attention ``[N, hidden]``."""
    model = scorer.model
    lay = layout(model)
    tail = last_block_tail(model)
    assert tail is not None  # the caller checked supports()
    offsets = torch.zeros(lay.n_layers, lay.n_heads, lay.head_dim)
    offsets[layer - 1] = correction
    fixed = SteeringVector.for_model(model, offsets, positions="last", signature=ModelSignature.of(model))
    texts = scorer.texts(list(ids))
    enc = encode_prompts(model, scorer.tokenizer, texts, batch_size=len(texts), prefix_cache=False)
    states = torch.empty(len(ids), lay.n_heads, lay.head_dim)
    residual = torch.empty(len(ids), lay.hidden_size)
    seen: list[torch.Tensor] = []  # the residual after attention, as the MLP's norm reads it
    hook = tail.mlp_norm.register_forward_pre_hook(lambda _m, args: seen.append(args[0][:, -1].float().cpu()))
    try:
        for b in enc.batches:  # whole passes: nothing is kept on this private encoding
            with steer(model, fixed, "answer"), record_head_outputs(model) as heads:
                last_step(model, b, scorer.letter_ids)
                states[b.index] = heads()[:, layer].cpu()
            residual[b.index] = seen[-1]
    finally:
        hook.remove()
    return states, residual
