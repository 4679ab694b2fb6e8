"""siamese package."""
