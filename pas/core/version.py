"""The package version and the machine facts reports record, in the lowest layer so every layer can name them."""

from __future__ import annotations

import os
import platform

__version__ = "0.1.0"


def machine_info() -> dict:
    """Platform, processor, CPU count, torch threads and version, and the GPU if any: recorded beside results."""
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
