"""Data: tokenizers, BPE training, documents, text corpora, token shards, windows, prepare."""
