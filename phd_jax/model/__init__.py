"""The model: attention paths, the transformer and its KV cache, the loss, sharding, FLOPs."""
