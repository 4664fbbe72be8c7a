"""The decode budget of one request, across all its media fields.

Per-field limits (``media.max_part_bytes``, ``max_pixels``, ``max_frames``) bound one value;
this bounds what a whole request may make the server hold in memory: the decoded bytes of
every image, frame, audio and file together (``media.max_decoded_bytes``) and the items of
one list-of-media field (``media.max_list_items``). Images are charged from their header,
before any pixel is decoded.
"""

from __future__ import annotations

from ..config import MediaConfig
from ..errors import PayloadTooLarge


class DecodeBudget:
    """What one request's media may cost; each breach is a 413 naming the field."""

    __slots__ = ("_counts", "max_bytes", "max_items", "used")

    def __init__(self, config: MediaConfig) -> None:
        self.max_bytes = config.max_decoded_bytes
        self.max_items = config.max_list_items
        self.used = 0
        self._counts: dict[str, int] = {}

    def count(self, field: str) -> None:
        """One more media value in ``field`` (the items of a list share its name)."""
        n = self._counts.get(field, 0) + 1
        if n > self.max_items:
            raise PayloadTooLarge(
                f"{field}: more than {self.max_items} media items (media.max_list_items)",
                field=field,
            )
        self._counts[field] = n

    def reserve(self, nbytes: int, field: str) -> None:
        """Charge ``nbytes`` of decoded data to the request, or refuse it."""
        if self.used + nbytes > self.max_bytes:
            raise PayloadTooLarge(
                f"{field}: decoding it would take the request's media to "
                f"{self.used + nbytes} bytes; the limit is {self.max_bytes} "
                "(media.max_decoded_bytes)",
                field=field,
            )
        self.used += nbytes
