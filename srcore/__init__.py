"""srcore: what every srnas stage shares (images, degradations, metrics, data, configs, checkpoints, costs)."""
