"""Pure PyTorch, no Ray: the encoder and heads, saving and loading a model, losses, sampling."""
