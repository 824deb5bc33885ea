"""Card variants: a card's TOML as a dict, and a copy with some values changed (for sweeps)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from .card_errors import CardError
from .cards import BUILTIN_CARDS, _builtin_path, load_card
from .toml_writer import card_toml

__all__ = ["card_document", "card_variant"]


def card_document(name_or_path: str | Path) -> dict[str, Any]:
    """The TOML document of a card (built-in name or path) as a dict, to edit and write back
    with ``card_toml`` (``card_variant`` does both for the common case)."""
    text_name = str(name_or_path)
    if text_name in BUILTIN_CARDS:
        text = _builtin_path(text_name).read_text(encoding="utf-8")
    else:
        text = Path(name_or_path).read_text(encoding="utf-8")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise CardError(f"device card {text_name}: not valid TOML ({err})") from None


def card_variant(
    base: str | Path,
    name: str,
    values: dict[str, float],
    *,
    source: str,
    folder: str | Path,
    section: str = "parameters",
) -> Path:
    """Write the card ``base`` with some values changed as ``folder/name.toml`` and return its
    path (for sweeps: one card per sweep point, each checked by ``load_card``).

    Args:
      base: built-in card name or path.
      name: the new card's name (also its file name).
      values: field -> new value in the entry's unit (the entry must exist in ``section``).
      source: provenance text of the changed values (they are marked ``assumed``).
      folder: where to write the card; an existing file of that name is not overwritten.
      section: ``parameters``, ``physical`` or ``retention``.

    Raises:
      CardError: an unknown field, an existing file, or a resulting card that does not load.
    """
    doc = card_document(base)
    doc["name"] = name
    doc["description"] = (
        f"{doc.get('description', base)} [variant: " + ", ".join(f"{k}={v:g}" for k, v in values.items()) + "]"
    )
    entries = doc.get(section, {})
    for field, value in values.items():
        if field not in entries:
            raise CardError(
                f"card_variant: card {base} has no {section}.{field}; it has {', '.join(entries) or 'none'}"
            )
        entries[field].update(value=float(value), provenance="assumed", source=source)
    path = Path(folder) / f"{name}.toml"
    if path.exists():
        raise CardError(f"card_variant: {path} exists; it is not overwritten")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(card_toml(doc), encoding="utf-8")
    load_card(path)
    return path
