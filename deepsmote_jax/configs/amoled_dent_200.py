"""DeepSMOTE encoder/decoder of the AMOLED paper's Fig. 3: 200x200 dent crops, latent 512 (meant for a GPU).

  python scripts/train_autoencoder.py --config configs/amoled_dent_200.py \
      --config.data.root=/path/to/dent_images --workdir runs/dent
The magnetic_tile stand-in: --config.data.root=../shared/data/magnetic_tile/images --config.model.channels=1
"""

from deepsmote_jax import config_lib as common


def get_config(arg: str | None = None):
  config = common.autoencoder_config(preset="amoled_dent_200", channels=3, epochs=1000, batch_size=100)
  config.data.source = "folder"
  if arg == "local":  # a seconds-long CPU smoke run of the same machinery
    common.make_local(config)
  return config
