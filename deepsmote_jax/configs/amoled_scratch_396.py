"""DeepSMOTE encoder/decoder of the AMOLED paper's Fig. 5: 396x396 grayscale film scratches, latent 1024 (GPU)."""

from deepsmote_jax import config_lib as common


def get_config(arg: str | None = None):
  config = common.autoencoder_config(preset="amoled_scratch_396", channels=1, epochs=1000, batch_size=100)
  config.data.source = "folder"
  if arg == "local":
    common.make_local(config)
  return config
