"""int8 weight quantization shared by the exporters (accuracy is each exporter's gate, never assumed)."""

from __future__ import annotations

import logging
from pathlib import Path


def int8_blocks(fp32: Path, int8: Path, block_size: int = 128) -> None:
    """MatMul weights to symmetric int8 in blocks of `block_size` input rows (MatMulNBits, bits=8), activations
    quantized per block at run time (accuracy_level 4: int8 compute). Per-tensor dynamic quantization
    (QuantizeLinear on activations) is the classic alternative; it fails the SBERT neighbour-recall gate (README)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    config = DefaultWeightOnlyQuantConfig(bits=8, block_size=block_size, is_symmetric=True, accuracy_level=4)
    quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), block_size=block_size, is_symmetric=True,
                                     accuracy_level=4, algo_config=config)
    logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    previous = logger.level
    logger.setLevel(logging.WARNING)  # it logs every node at INFO
    try:
        quantizer.process()
    finally:
        logger.setLevel(previous)
    quantizer.model.save_model_to_file(str(int8), False)
