"""The live pipeline: source -> preprocess -> embed -> head -> publish."""
