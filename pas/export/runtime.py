"""Questionnaire answers computed in llama.cpp itself (``llama-cpp-python``, an optional extra), with or without a
control vector: the check that an exported vector does in llama.cpp what pas's steering does in torch.

The prompts are pas's own (:meth:`pas.score.scorer.ItemScorer.texts`), tokenised by the model's transformers
tokenizer and handed to llama.cpp as token ids, so both runtimes read the same tokens; the answer is read from
the next-token logits of the five letters, as :func:`pas.score.scorer.to_distribution` reads them. The control
vector goes in through ``llama_set_adapter_cvec``, the call ``llama-cli --control-vector`` ends in.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from collections.abc import Sequence

import numpy as np
import torch

from pas.export.llamacpp import ControlVector
from pas.score.scorer import OptionDistribution, to_distribution

RUNTIME_PACKAGE = "llama_cpp"
INSTALL_HINT = ("pip install llama-cpp-python (builds llama.cpp from source: several minutes on a 2-core machine; "
                "`make llamacpp` does it in the project's environment)")


def runtime_missing() -> str | None:
    """None when llama.cpp's Python binding can be imported; else why not and how to install it."""
    if importlib.util.find_spec(RUNTIME_PACKAGE) is None:
        return f"llama.cpp's Python binding is not installed: {INSTALL_HINT}"
    return None


class LlamaCppScorer:
    """A GGUF model loaded in llama.cpp (CPU), scoring prompts given as token ids; one control vector at a time."""

    def __init__(self, gguf: str | os.PathLike[str], *, n_ctx: int = 2048, threads: int | None = None) -> None:
        reason = runtime_missing()
        if reason is not None:
            raise RuntimeError(reason)
        import llama_cpp

        self._api = llama_cpp.llama_cpp  # the low-level C API
        self.llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=n_ctx, n_batch=n_ctx, logits_all=False,
                                   n_threads=threads or torch.get_num_threads(), verbose=False)
        self.n_layers = int(self._api.llama_model_n_layer(self.llm.model))
        self.width = int(self.llm.n_embd())
        self.vocab = int(self.llm.n_vocab())

    def set_control_vector(self, cv: ControlVector | None, scale: float = 1.0) -> None:
        """Apply ``cv`` (times ``scale``) to every following call, as ``llama-cli --control-vector-scaled`` does;
        None removes it."""
        if cv is None:
            self._check(self._api.llama_set_adapter_cvec(self.llm.ctx, None, 0, self.width, -1, -1))
            return
        if cv.width != self.width or max(cv.directions) >= self.n_layers:
            raise ValueError(f"the control vector (width {cv.width}, up to block {max(cv.directions)}) does not fit "
                             f"this model (width {self.width}, {self.n_layers} blocks)")
        data = np.zeros((self.n_layers - 1, self.width), dtype=np.float32)  # llama.cpp's buffer starts at block 1
        for n, v in cv.directions.items():
            data[n - 1] = v * scale
        self._data = data  # kept alive while llama.cpp may read it
        pointer = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        self._check(self._api.llama_set_adapter_cvec(self.llm.ctx, pointer, data.size, self.width, 1,
                                                     self.n_layers - 1))

    @staticmethod
    def _check(status: int) -> None:
        if status != 0:
            raise RuntimeError(f"llama.cpp refused the control vector (status {status})")

    def next_logits(self, tokens: Sequence[int], keep: int = 0) -> np.ndarray:
        """``[vocab]`` float32: the logits after ``tokens``. The first ``keep`` tokens must be the ones already in
        llama.cpp's cache (a shared prefix, :meth:`score`); the rest of the cache is dropped and recomputed."""
        if keep == 0:
            self.llm.reset()
        self.llm.n_tokens = keep  # eval() drops the cache past this point, then decodes from it
        self.llm.eval(list(tokens[keep:]))
        logits = self._api.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(logits, shape=(self.vocab,)).copy()

    def score(self, prompts: Sequence[Sequence[int]], letter_ids: Sequence[int]) -> OptionDistribution:
        """The option distribution of each prompt (token ids) over the letters ``letter_ids``, with the letters'
        share of the next-token mass, as pas's own scorer computes it. The prompts' common prefix is computed
        once (under the current control vector) and kept in the cache."""
        prefix = _common_prefix(prompts)
        if prefix:
            self.next_logits(prompts[0][:prefix])
        rows = []
        for tokens in prompts:
            logits = torch.from_numpy(self.next_logits(tokens, keep=prefix)).double()
            rows.append(torch.cat([logits[list(letter_ids)], torch.logsumexp(logits, 0)[None]]))
        return to_distribution(torch.stack(rows))

    def close(self) -> None:
        """Free llama.cpp's model and context now (rather than at interpreter exit)."""
        self.llm.close()

    def __enter__(self) -> LlamaCppScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _common_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving each at least one token of its own."""
    shortest = min(len(p) for p in prompts)
    n = 0
    while n < shortest - 1 and all(p[n] == prompts[0][n] for p in prompts):
        n += 1
    return n
