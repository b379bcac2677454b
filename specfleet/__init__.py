# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""specfleet's scheduling core: plain Python, no Ansible imports.

It lives under ``plugins/module_utils`` so that Ansible modules get it shipped to nodes by
AnsiballZ (``from ansible.module_utils.specfleet import ...``), while controller-side
plugins, the CLI and the tests import the same files as the top-level package
``specfleet`` (see ``plugins/module_utils/specfleet/README.md``). Modules inside this
package therefore only use relative imports.
"""
from __future__ import annotations

__version__ = "0.1.0"
