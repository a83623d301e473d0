"""qlayer: a Python client for qlayer-server (weight-only quantized layers over gRPC).

qlayer.Client speaks numpy; the PyTorch modules (RemoteLinear, RemoteMoE,
offload, parallel_forward) live in qlayer.torch_modules and are imported on
first use, so that `import qlayer` does not need torch.
"""

from .client import Client, ForwardInfo, QlayerError
from .tensors import bf16_bits_to_float, float_to_bf16_bits

_TORCH_NAMES = ("RemoteLinear", "RemoteMoE", "offload", "parallel_forward")

__all__ = ["Client", "ForwardInfo", "QlayerError", "bf16_bits_to_float", "float_to_bf16_bits",
           *_TORCH_NAMES]


def __getattr__(name):
    if name in _TORCH_NAMES:
        from . import torch_modules
        return getattr(torch_modules, name)
    raise AttributeError(f"module 'qlayer' has no attribute {name!r}")
