"""Example in-process hook plugin: set the domain's ``<description>`` from a custom property.

At ``before_vm_start``, a VM with the custom property ``description`` gets that text as its libvirt
``<description>`` (replacing any). Register it in a package's setup.cfg::

    [options.entry_points]
    vdsmlike.hooks =
        describe = mypkg.describe:DescriptionFromCustom

and list ``describe`` among the enabled plugins in the agent's configuration (see docs/hooks.md).
"""

from __future__ import annotations

from xml.dom.minidom import Document

from hooks.plugins import HookContext, HookVeto

#: The longest description we accept; a longer one vetoes the start.
MAX_LENGTH = 1024


class DescriptionFromCustom:
    """Writes ``custom["description"]`` into ``<domain><description>``."""

    points = frozenset({"before_vm_start"})

    def __call__(self, point: str, payload: Document, context: HookContext) -> Document | None:
        """:returns: the edited DOM, or None when the VM has no ``description`` property.

        :raises HookVeto: when the description is longer than :data:`MAX_LENGTH`.
        """
        text = context.custom.get("description")
        if text is None:
            return None
        if len(text) > MAX_LENGTH:
            raise HookVeto(f"description is {len(text)} characters, more than {MAX_LENGTH}")
        domain = payload.documentElement
        for old in [n for n in domain.childNodes if getattr(n, "tagName", None) == "description"]:
            domain.removeChild(old)
        element = payload.createElement("description")
        element.appendChild(payload.createTextNode(text))
        domain.insertBefore(element, domain.firstChild)
        return payload
