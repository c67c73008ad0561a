"""DeepSMOTE paper's MNIST / Fashion-MNIST setting (28x28x1, latent 300), data from TFDS."""
from deepsmote_jax import config_lib as common


def get_config(arg: str | None = None):
  config = common.autoencoder_config(preset="deepsmote_mnist", channels=1, epochs=200, batch_size=100)
  config.data.source = "tfds"
  config.data.name = "mnist"
  if arg == "local":
    common.make_local(config)
  return config
