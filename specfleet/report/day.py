# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The reported day: its bounds in a time zone, and how its times are printed."""
from __future__ import annotations

import re
import time
from datetime import date, datetime, timedelta, tzinfo

from specfleet.store.core import StoreError

DAY = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")


class ReportError(StoreError):
    """The report cannot be made (unknown project, bad day)."""


def day_bounds(day: str | None = None, tz: tzinfo | None = None, now: float | None = None) -> tuple[str, float, float]:
    """``(YYYY-MM-DD, start, end)`` of ``day`` (default: today) in ``tz`` (default: local time).

    ``end`` is the next midnight, so a day with a daylight-saving change has 23 or 25 hours.
    """
    if day is None:
        which = datetime.fromtimestamp(time.time() if now is None else now, tz).date()
    else:
        text = str(day).strip()
        if not DAY.match(text):
            raise ReportError(f"day {day!r} is not a date written YYYY-MM-DD")
        try:
            which = date.fromisoformat(text)
        except ValueError as exc:
            raise ReportError(f"day {day!r} is not a date: {exc}") from None
    start = datetime(which.year, which.month, which.day, tzinfo=tz)
    following = which + timedelta(days=1)
    end = datetime(following.year, following.month, following.day, tzinfo=tz)
    return which.isoformat(), start.timestamp(), end.timestamp()


class Clock:
    """Prints epoch seconds in the report's time zone."""

    def __init__(self, tz: tzinfo | None):
        self.tz = tz

    def at(self, ts: float) -> datetime:
        moment = datetime.fromtimestamp(ts, self.tz)
        return moment if self.tz is not None else moment.astimezone()

    def date(self, ts: float) -> str:
        return self.at(ts).date().isoformat()

    def hm(self, ts: float) -> str:
        return self.at(ts).strftime("%H:%M")

    def datetime(self, ts: float) -> str:
        return self.at(ts).strftime("%Y-%m-%d %H:%M")

    def zone(self, ts: float) -> str:
        moment = self.at(ts)
        offset = moment.strftime("%z")
        name = moment.tzname() or ""
        return f"{name} (UTC{offset[:3]}:{offset[3:]})" if offset else name
