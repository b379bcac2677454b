# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The store's reads and writes for the progress tracker and the action plugins (specfleet.report.progress, ansible_specfleet).

A mixin of :class:`specfleet.store.core.Store`: methods use ``self.db`` (an ``sqlite3``
connection with ``sqlite3.Row`` rows) and ``self.transaction()``.
"""
from __future__ import annotations


class ProgressQueries:
    pass
