"""Developer tools: training, export and evaluation of the deepfake model (not shipped on the inference path)."""
