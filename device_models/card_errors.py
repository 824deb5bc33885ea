"""The error raised for a device card that cannot be read, checked or written."""

__all__ = ["CardError"]


class CardError(ValueError):
    """A device card that cannot be used; the message names file, field, value and the rule."""
