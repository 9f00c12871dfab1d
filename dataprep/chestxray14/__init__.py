"""NIH ChestX-ray14: facts, synthetic mirror, extraction, TFRecord writing."""
