"""Inference: exact and cheap prefill, parallel hidden decoding and sampling, over the KV cache."""
