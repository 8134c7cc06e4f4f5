"""phd-jax: the PHD-Transformer (Parallel Hidden Decoding) in JAX/Flax NNX.

Subpackages by concern, each importing only those below it (README, Layout; tests/test_layering.py
checks it): spec, masks, files <- data, pallas_kernels <- config <- model <- run <- inference
<- eval <- train <- interop <- cli. docs/method.md states the method.
"""
