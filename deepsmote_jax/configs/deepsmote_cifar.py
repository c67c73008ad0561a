"""DeepSMOTE paper's CIFAR-10 / SVHN setting (32x32x3, latent 600), data from TFDS."""

from deepsmote_jax import config_lib


def get_config(arg: str | None = None):
  return config_lib.deepsmote_tfds_config("deepsmote_cifar", 3, "cifar10", arg)
