"""The shop's users service."""
