"""resnet_jax: the residual networks of He et al. in JAX/Flax NNX."""
