"""qanat.gateway."""
