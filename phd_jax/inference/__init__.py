"""Inference: the KV cache, exact and cheap prefill, parallel hidden decoding, sampling."""
