# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Durations as users write them (``90s``, ``5m``, ``1h30m``, ``2d``) parsed once, into seconds; and written back.

One home for writing seconds as text, so a spec's ``timeout``, a running attempt's elapsed
time and a report's cycle time are each written one way wherever they appear:

* :func:`format_duration` (``1h30m``): as a spec would write it, the inverse of :func:`parse_duration`;
* :func:`format_elapsed` (``2m31s``, ``1h02m``): a clock running, to the second under an hour;
* :func:`format_duration_words` (``1 h 05 min``): a measured span in a report, ``n/a`` when unknown.
"""
from __future__ import annotations

import re

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
MAX_DURATION = 7 * 86400


def parse_duration(value: object, maximum: int | None = MAX_DURATION, allow_zero: bool = False) -> int:
    """Return whole seconds for ``value``; raise ``ValueError`` with what would be right.

    A bare integer means seconds. By default zero, negative and anything above seven
    days are refused: a spec is meant to be minutes of agent work, and a week-long
    timeout is always a typo that would pin a slot. Ages (cleanup) pass ``maximum=None``
    and ``allow_zero``.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write e.g. 90s, 5m, 1h30m")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        match = _DURATION.match(text)
        if not text or not match or not any(match.groups()):
            if text.isdigit():
                seconds = int(text)
            else:
                raise ValueError(f"{value!r} is not a duration; write e.g. 90s, 5m, 1h30m")
        else:
            seconds = sum(int(n) * _UNITS[u] for n, u in zip(match.groups(), "dhms", strict=True) if n)
    else:
        raise ValueError(f"{value!r} is not a duration; write e.g. 90s, 5m, 1h30m")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"{value!r} must be longer than zero")
    if maximum is not None and seconds > maximum:
        raise ValueError(f"{value!r} is longer than the {format_duration(maximum)} maximum")
    return seconds


def format_duration(seconds: int) -> str:
    """Inverse of :func:`parse_duration` for messages: ``5400`` -> ``1h30m``."""
    parts = []
    for unit, size in _UNITS.items():
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def format_elapsed(seconds: float, *, minutes_always: bool = False) -> str:
    """``45s``, ``2m31s``, ``1h02m``: time spent so far, to the second under an hour, to the minute above.

    ``minutes_always`` writes minutes under a minute too (``0m45s``), as ``specfleet status``
    has always shown them.
    """
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds < 60 and not minutes_always:
        return f"{seconds}s"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def format_duration_words(seconds: float | None) -> str:
    """``45 s``, ``12 min``, ``1 h 05 min`` (rounded to the second, then cut to the minute); ``n/a`` for ``None``."""
    if seconds is None:
        return "n/a"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, _ = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min"
