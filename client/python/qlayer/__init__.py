"""qlayer: a Python client for qlayer-server (weight-only quantized layers over gRPC)."""

from .client import Client, ForwardInfo, QlayerError
from .tensors import bf16_bits_to_float, float_to_bf16_bits

__all__ = ["Client", "ForwardInfo", "QlayerError", "bf16_bits_to_float", "float_to_bf16_bits"]
