"""qanat.backends."""
