"""Per-head activations of contrastive questionnaire prompts (stage 3).

For each item two prompts: the item prompt answered "A" (Very Accurate) and "E"
(Very Inaccurate). Each head's output (the attention output projection's input,
split into heads) is read at the answer token. They do not depend on the subject,
so they are computed once per (model, template, items) and cached as safetensors
under ``$PAS_CACHE/activations/<fingerprint>.safetensors``.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from einops import rearrange
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from pas.core.arch import layout, o_proj_modules
from pas.core.data import ItemBank
from pas.core.models import cache_dir, model_name
from pas.score.cache import ScorerCache
from pas.score.prompts import LETTERS, PromptTemplate
from pas.score.scorer import ItemScorer
from pas.steer.hooks import record_head_outputs

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from pas.steer.vector import SteeringVector

POSITIVE, NEGATIVE = LETTERS[0], LETTERS[-1]  # "Very Accurate" / "Very Inaccurate"


@dataclass(frozen=True)
class HeadActivations:
    """``acts[item, answer, layer, head, head_dim]``: answer 0 = "A" prompt, 1 = "E" prompt."""

    item_ids: tuple[int, ...]
    acts: torch.Tensor  # float32 [N, 2, L, H, D]

    def subset(self, ids: Sequence[int]) -> HeadActivations:
        """The rows of items ``ids``, in that order."""
        pos = {i: n for n, i in enumerate(self.item_ids)}
        return HeadActivations(tuple(ids), self.acts[[pos[i] for i in ids]])


def contrastive_texts(tokenizer: PreTrainedTokenizerBase, bank: ItemBank, ids: Sequence[int], template: PromptTemplate,
                      system: str | None = None) -> list[str]:
    """Interleaved [item1+A, item1+E, item2+A, ...] prompts."""
    by_id = bank.by_id
    return [template.render(tokenizer, by_id[i].text, system, answer=a) for i in ids for a in (POSITIVE, NEGATIVE)]


def check_contrast(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> None:
    """The A and E prompts must differ exactly at their last token (the answer).

    The paper's released code trimmed the chat template so that both prompts became the
    same token sequence; this guards against that class of bug.
    """
    for pos, neg in zip(texts[0::2], texts[1::2], strict=False):
        a, e = tokenizer.encode(pos, add_special_tokens=False), tokenizer.encode(neg, add_special_tokens=False)
        if len(a) != len(e) or a[:-1] != e[:-1] or a[-1] == e[-1]:
            raise ValueError(f"contrastive prompts do not differ only at the answer token: {pos[-60:]!r} vs "
                             f"{neg[-60:]!r}")


@torch.no_grad()
def collect_head_outputs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *,
                         batch_size: int = 16, progress: bool = False) -> torch.Tensor:
    """Head outputs at the last token of each text: float32 ``[N, L, H, D]`` (left-padded batches)."""
    out = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        with record_head_outputs(model) as heads:
            for b0 in tqdm(range(0, len(texts), batch_size), desc="head activations", disable=not progress,
                           leave=False):
                enc = tokenizer(list(texts[b0 : b0 + batch_size]), return_tensors="pt", padding=True,
                                add_special_tokens=False).to(model.device)
                positions = (enc["attention_mask"].cumsum(1) - 1).clamp(min=0)
                model(**enc, position_ids=positions, logits_to_keep=1)
                out.append(heads().cpu())
    finally:
        tokenizer.padding_side = side
    return torch.cat(out)


def activations_fingerprint(model: PreTrainedModel, template: PromptTemplate, ids: Sequence[int], system: str | None,
                            texts: Sequence[str]) -> str:
    lay = layout(model)
    blob = "|".join([model_name(model), lay.fingerprint, str(model.dtype), template.fingerprint(),
                     ",".join(map(str, ids)), system or "", texts[0], _weights_digest(model)])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _weights_digest(model: PreTrainedModel) -> str:
    """Cheap digest of a few weights, so a fine-tuned model with the same config gets its own cache."""
    proj = cast(torch.Tensor, o_proj_modules(model)[0].weight)
    return hashlib.sha256(proj.detach().float().cpu().numpy().tobytes()[:65536]).hexdigest()[:12]


def head_activations(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, bank: ItemBank, ids: Sequence[int],
                     *, template: PromptTemplate | None = None, system: str | None = None, use_cache: bool = True,
                     refresh: bool = False, progress: bool = False) -> HeadActivations:
    """Contrastive head activations for items ``ids``, from the disk cache when present.

    ``use_cache=False`` neither reads nor writes the cache; ``refresh=True`` recomputes and rewrites it.
    """
    template = template or PromptTemplate()
    texts = contrastive_texts(tokenizer, bank, ids, template, system)
    check_contrast(tokenizer, texts)
    fingerprint = activations_fingerprint(model, template, ids, system, texts)
    path = Path(cache_dir()) / "activations" / f"{fingerprint}.safetensors"
    if use_cache and not refresh and path.exists():
        try:
            return HeadActivations(tuple(ids), load_file(path)["acts"])
        except Exception as e:  # our own cache file, corrupt: say so, recompute, replace it atomically
            warnings.warn(f"activation cache {path} is unreadable ({e}); recomputing it", stacklevel=1)
    flat = collect_head_outputs(model, tokenizer, texts, progress=progress)
    acts = rearrange(flat, "(n a) l h d -> n a l h d", a=2).contiguous()
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"acts": acts}, tmp)
        tmp.replace(path)
    return HeadActivations(tuple(ids), acts)


@dataclass(frozen=True)
class AnswerStates:
    """The model's states at the answer position of each questionnaire prompt (no answer appended).

    ``residual [N, L + 1, hidden]``: the hidden states (embeddings, then each layer's output);
    ``heads [N, L, H, D]``: each head's output, the input of the attention output projection.
    These are what a gated vector's gates read when scoring, unsteered.
    """

    item_ids: tuple[int, ...]
    residual: torch.Tensor
    heads: torch.Tensor

    def rows(self, ids: Sequence[int]) -> AnswerStates:
        pos = {i: n for n, i in enumerate(self.item_ids)}
        idx = [pos[i] for i in ids]
        return AnswerStates(tuple(ids), self.residual[idx], self.heads[idx])


ANSWER_STATES: ScorerCache[tuple[int, ...], AnswerStates] = ScorerCache("answer states")


def answer_states(scorer: ItemScorer, ids: Sequence[int], system: str | None = None,
                  steering: SteeringVector | None = None) -> AnswerStates:
    """States at the answer position of items ``ids`` under ``scorer``'s prompt (and ``steering``, applied at
    the answer position); remembered when there is neither system prompt nor steering (then they are the same
    for every person)."""
    if system is not None or steering is not None:
        return _answer_states(scorer, ids, system, steering)
    return ANSWER_STATES.get(scorer, tuple(ids), lambda: _answer_states(scorer, ids))


@torch.no_grad()
def _answer_states(scorer: ItemScorer, ids: Sequence[int], system: str | None = None,
                   steering: SteeringVector | None = None) -> AnswerStates:
    from pas.score.scorer import new_cache
    from pas.steer.position import steer

    model = scorer.model
    enc = scorer.encode(ids, system)
    residual, heads, order = [], [], []
    with steer(model, steering, "answer"), record_head_outputs(model) as recorded:
        for b in enc.batches:
            out = model(b.last_ids, attention_mask=b.mask, position_ids=b.positions,
                        past_key_values=new_cache(model, b.full_kv()), use_cache=True, logits_to_keep=1,
                        output_hidden_states=True)
            residual.append(torch.stack([h[:, -1].float() for h in out.hidden_states], 1).cpu())
            heads.append(recorded().cpu())
            order.append(b.index)
    index = torch.cat(order)
    res = torch.empty(len(ids), *residual[0].shape[1:])
    res[index] = torch.cat(residual)
    hd = torch.empty(len(ids), *heads[0].shape[1:])
    hd[index] = torch.cat(heads)
    return AnswerStates(tuple(ids), res, hd)
