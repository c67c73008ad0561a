"""DeepSMOTE paper's MNIST / Fashion-MNIST setting (28x28x1, latent 300), data from TFDS."""

from deepsmote_jax import config_lib


def get_config(arg: str | None = None):
  return config_lib.deepsmote_tfds_config("deepsmote_mnist", 1, "mnist", arg)
