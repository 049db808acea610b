"""qanat.runtime."""
