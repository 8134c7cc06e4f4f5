"""Other ecosystems' formats: OLMo2 checkpoints of Hugging Face transformers."""
