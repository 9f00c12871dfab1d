"""Polyp segmentation on Kvasir-SEG: ResUNet++ and a U-Net baseline, on the shared trainer skeleton in training/."""
