"""Vector files of every earlier format still load and steer to the very logits they gave when written.

``tests/data/old_vectors`` holds files written by the format-3 code (``make_old_vectors.py`` beside them):
a constant vector as format 1 (no kind, an ``extra`` dict) and 3 (with the fit facts it then carried),
a gated one as format 2, and a gated one with gate limits as format 3, plus the logits each gave on the
tiny seeded Llama.
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pas.steer.vector import SteeringVector

OLD = Path(__file__).parent / "data" / "old_vectors"


@pytest.fixture(scope="module")
def seeded_llama(tokenizer):
    from conftest import make_tiny

    return make_tiny("llama", len(tokenizer))


@pytest.mark.parametrize("name", ["v1_constant", "v2_gated", "v3_constant", "v3_gated_limit"])
def test_old_formats_load_with_identical_logits(seeded_llama, name):
    expected = load_file(OLD / "expected_logits.safetensors")
    vector = SteeringVector.load(OLD / f"{name}.safetensors")
    assert vector.kind == ("gated" if "gated" in name else "constant")
    with torch.no_grad(), vector.apply(seeded_llama):
        logits = seeded_llama(expected["ids"][None]).logits[0, :, :64]
    assert torch.equal(logits, expected[name])
