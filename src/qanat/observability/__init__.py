"""qanat.observability."""
