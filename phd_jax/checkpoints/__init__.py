"""A run on disk: its workdir, its checkpoints, and loading it back for inference."""
