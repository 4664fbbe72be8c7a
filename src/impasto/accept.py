"""The ``Accept`` header, parsed once: media ranges by preference, ``q=0`` meaning "not this".

Every place that negotiates a response (the media envelope, SSE, gathering a stream, each
protocol adapter) asks these two functions, so they all read a header the same way.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=256)
def ranges(accept: str | None) -> tuple[str, ...]:
    """The media ranges of ``accept``, most preferred first (stable for equal ``q``), lower
    case, without parameters; ranges with ``q=0`` (or an unreadable q) are left out."""
    if not accept:
        return ()
    found = []
    for i, item in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media and q > 0:
            found.append((-q, i, media.lower()))
    return tuple(media for _, _, media in sorted(found))


def wants(accept: str | None, media_type: str) -> bool:
    """True when the Accept header lists ``media_type`` itself (not through a wildcard) with
    a non-zero ``q``."""
    return media_type in ranges(accept)
