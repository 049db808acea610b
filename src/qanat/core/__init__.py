"""qanat.core."""
