"""Kvasir-SEG (polyp segmentation): facts, the synthetic mirror and the TFRecord writer."""
