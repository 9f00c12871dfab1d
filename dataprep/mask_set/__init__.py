"""A segmentation data set from the user's own image and mask folders."""
