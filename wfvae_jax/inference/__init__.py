"""Inference: jitted encode/decode (``api``), Causal Cache chunking, device meshes and sharding."""
