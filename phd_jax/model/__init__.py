"""The model: attention paths, the transformer, the loss, sharding and the FLOP count."""
