"""DeepSMOTE paper's CIFAR-10 / SVHN setting (32x32x3, latent 600), data from TFDS."""
from deepsmote_jax import config_lib as common


def get_config(arg: str | None = None):
  config = common.autoencoder_config(preset="deepsmote_cifar", channels=3, epochs=200, batch_size=100)
  config.data.source = "tfds"
  config.data.name = "cifar10"
  if arg == "local":
    common.make_local(config)
  return config
