"""The network: frame encoders (backbones, weights), clip heads, LUV-Net and its baselines
(network), the exact incremental streaming head, the loss, the facts that travel with the
weights (config) and checkpoints."""
