"""inspect package."""
