"""The front door: ``qanat.__all__`` names exactly what the package re-exports."""

import qanat


def test_all_matches_public_names() -> None:
    """Every public name in the package namespace is in ``__all__`` and vice versa."""
    public = {
        name
        for name, value in vars(qanat).items()
        if not name.startswith("_") and not isinstance(value, type(qanat))
    }
    exported_modules = {n for n in qanat.__all__ if isinstance(getattr(qanat, n), type(qanat))}
    assert public == set(qanat.__all__) - exported_modules
    assert exported_modules == {"gray"}  # modules are exported on purpose, by name


def test_all_has_no_duplicates() -> None:
    """Each public name is listed once (ruff's RUF022 keeps the list sorted)."""
    assert len(qanat.__all__) == len(set(qanat.__all__))
