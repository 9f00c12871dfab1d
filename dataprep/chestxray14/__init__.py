"""NIH ChestX-ray14: facts, the metadata CSV and split lists, the synthetic mirror and the TFRecord writer."""
