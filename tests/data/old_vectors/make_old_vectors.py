"""Writes format 1/2/3 vector files with the format-3 code (commit cb31391) and the logits they give, for tests."""
import json
import sys

import torch

sys.path.insert(0, "tests")
from conftest import make_tiny
from safetensors.torch import save_file
from transformers import AutoTokenizer

from pas.core.arch import layout
from pas.core.models import _dequantised_cache, embedded_gguf_path
from pas.steer.vector import SteeringVector

tok = AutoTokenizer.from_pretrained(_dequantised_cache(embedded_gguf_path()))
model = make_tiny("llama", len(tok))
lay = layout(model)
g = torch.Generator().manual_seed(7)
shape = (lay.n_layers, lay.n_heads, lay.head_dim)
ids = torch.tensor(tok.encode("Tell me about yourself and your friends today", add_special_tokens=False)[:8])
out = "tests/data/old_vectors"
def rnd(*s): return torch.randn(*s, generator=g) * 0.5
const = SteeringVector.for_model(model, rnd(*shape) * (torch.rand(shape[:2], generator=g) > 0.5)[..., None],
                                 positions="all", heads=((0, 1), (2, 3)), probe_accuracies=(0.7, 0.8),
                                 sigmas=(1.0, 2.0), alpha=3.0, subject="s1", item_hash="abc",
                                 config={"learn": True, "k": 2})
w, b, v = rnd(*shape), rnd(*shape[:2]), rnd(*shape)
gated = SteeringVector.for_model(model, v, kind="gated", gate_weights=w, gate_bias=b, positions="all", subject="s2")
lim = torch.full(shape[:2], float("inf"))
lim[1] = 0.2
limited = SteeringVector.for_model(model, v, kind="gated", gate_weights=w, gate_bias=b, gate_limit=lim, positions="all")
logits = {}
for name, vec, version in (("v1_constant", const, 1), ("v2_gated", gated, 2), ("v3_constant", const, 3),
                           ("v3_gated_limit", limited, 3)):
    meta = vec.metadata()
    meta["format_version"] = version
    if version == 1:
        meta.pop("kind")
        meta.pop("weights_sample")
        meta.pop("derived")
        meta["extra"] = {"fit_seconds": 1.0}
    tensors = {n: getattr(vec, n) for n in ("offsets", "gate_weights", "gate_bias", "gate_limit")
               if getattr(vec, n) is not None}
    save_file(tensors, f"{out}/{name}.safetensors", metadata={"pas": json.dumps(meta)})
    with torch.no_grad(), vec.apply(model):
        logits[name] = model(ids[None]).logits[0, :, :64].contiguous()
logits["ids"] = ids
save_file(logits, f"{out}/expected_logits.safetensors")
print({k: tuple(t.shape) for k, t in logits.items()})
