"""Model families, by the name a checkpoint's metadata gives (``family``); a plain dict, no registry.

Adding one: a package ``dreamsr/families/<name>/`` whose ``__init__`` defines ``FAMILY`` (a
:class:`~dreamsr.families.base.Family`), plus one line in :data:`FAMILIES`. See docs/architecture.md.
"""

from __future__ import annotations

from dreamsr.errors import CheckpointError
from dreamsr.families import idm, resshift, sr3
from dreamsr.families.base import Family

__all__ = ["FAMILIES", "Family", "get_family"]

FAMILIES: dict[str, Family] = {
    "sr3": sr3.FAMILY,
    "idm": idm.FAMILY,
    "resshift": resshift.FAMILY,
}


def get_family(name: str) -> Family:
    """The family called ``name``; CheckpointError naming the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise CheckpointError(f"unknown model family {name!r}; this dreamsr knows "
                              f"{', '.join(sorted(FAMILIES))} (upgrade dreamsr?)") from None
