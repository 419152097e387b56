"""Pretrained models shipped with the package (safetensors); see MODEL_CARD.md beside them."""
