"""Data: base datasets and their sources, the randomization variants, preprocessing, augmentation, the fitted data of a run."""
