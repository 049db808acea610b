"""qanat.http."""
