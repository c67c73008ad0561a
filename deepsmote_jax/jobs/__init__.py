"""Jobs: what the scripts and the command line run (train the autoencoder, generate, train a classifier,
evaluate, the whole pipeline). They read configs and data, write files, and use `train/` and `models/`."""
