"""File formats: videos (PyAV), PyTorch/safetensors files, checkpoint layouts and conversion.

Each on-disk format has one owner module here.
"""
