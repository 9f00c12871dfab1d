"""Loaded by pytest before any test module: select legacy Keras before TensorFlow is imported."""
import runtime  # noqa: F401
