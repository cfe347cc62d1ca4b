"""An exported control vector in llama.cpp itself: it loads, it steers as llama.cpp's placement does in torch, and
removing it restores the unsteered answers. Runs where llama-cpp-python is installed (`make llamacpp`); CI skips it
(llama.cpp builds from source there, minutes each run) and docs/export.md keeps the measurement with its command."""

import pytest
import torch

from pas.export.runtime import runtime_missing

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(runtime_missing() is not None, reason=str(runtime_missing()))]

ITEMS = 24


def test_llama_cpp_applies_the_exported_vector_as_torch_does(real_model, papi, tmp_path):
    from pas.core.models import embedded_gguf_path
    from pas.export.llamacpp import read_control_vector, to_control_vector, write_control_vector
    from pas.export.runtime import LlamaCppScorer
    from pas.score.scorer import ItemScorer, score_texts
    from pas.steer.hooks import add_block_outputs
    from pas.steer.signature import ModelSignature
    from pas.steer.vector import SteeringVector

    model, tok = real_model
    scorer = ItemScorer(model, tok, papi.bank)
    ids = list(papi.bank.test_ids)[:ITEMS]
    texts = scorer.texts(ids)
    prompts = [tok.encode(t, add_special_tokens=False) for t in texts]
    sig = ModelSignature.of(model)
    offsets = torch.zeros(sig.shape)
    offsets[[10, 20]] = 0.5 * torch.randn(2, *sig.shape[1:], generator=torch.Generator().manual_seed(0))
    vector = SteeringVector(offsets, sig)  # constant (pas's poles are gated: no control-vector form)
    cv = read_control_vector(write_control_vector(to_control_vector(vector, model), tmp_path / "e.gguf"))

    with LlamaCppScorer(embedded_gguf_path()) as cpp:
        base = cpp.score(prompts, scorer.letter_ids)
        cpp.set_control_vector(cv)
        steered = cpp.score(prompts, scorer.letter_ids)
        cpp.set_control_vector(None)
        again = cpp.score(prompts, scorer.letter_ids)
    with add_block_outputs(model, cv.residual(len(vector.offsets))):
        emulated = score_texts(model, tok, texts, letter_ids=scorer.letter_ids)

    assert (again.answers == base.answers).all()  # removing the vector restores llama.cpp's own answers
    assert (steered.expected != base.expected).any()  # the file was applied
    torch_base = scorer.score(ids)
    quantised = (base.answers == torch_base.answers).mean()  # the GGUF's own difference from transformers
    assert (steered.answers == emulated.answers).mean() >= min(0.75, quantised - 0.1)
