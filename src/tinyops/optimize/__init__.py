"""Embedded optimization: int8 post-training quantization, float16, dynamic range, pruning."""
