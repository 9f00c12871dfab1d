"""A classification data set from the user's own CSV and image folder."""
