"""The shop's catalog service."""
