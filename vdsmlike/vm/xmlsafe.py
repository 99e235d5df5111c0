"""
Safe XML parsing, escaping and text-preserving edits for the domain XML modules.

Pure: no I/O. Everything that reads XML from outside the agent goes through :func:`parse_xml`,
which uses :mod:`defusedxml` (no DTDs, no entities, no external references), caps the size and
the nesting depth, and turns every parser complaint into :class:`InvalidDomainXml` with a message
that says what is wrong and where.

Edits that must leave the rest of a document untouched (our ``<metadata>`` element, the domain
type) do not re-serialize a tree, which would rename namespace prefixes and drop comments; they
locate elements by byte offset with :func:`element_spans` and splice the text.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.parsers import expat

import defusedxml
import defusedxml.ElementTree as DET

#: Default cap on the size of XML we parse, in bytes (UTF-8).
MAX_XML_BYTES = 1024 * 1024
#: Cap on element nesting; libvirt domain XML is about 6 levels deep.
MAX_DEPTH = 100

_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ATTRIBUTE = re.compile(r"""\s([^\s=/>]+)\s*=\s*("[^"]*"|'[^']*')""")


class InvalidDomainXml(ValueError):
    """Domain (or device) XML that we refuse; the message says exactly what is wrong."""


class InvalidVmParams(ValueError):
    """VDSM legacy ``VM.create`` or hotplug params that we refuse; the message names the key."""


class _DepthLimitedBuilder(ET.TreeBuilder):
    """A tree builder that refuses documents nested deeper than :data:`MAX_DEPTH`."""

    def __init__(self) -> None:
        super().__init__()
        self._depth = 0

    def start(self, tag: str, attrs: dict[str, str]) -> ET.Element:
        """Open an element, counting the depth."""
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise InvalidDomainXml(f"nested too deeply: more than {MAX_DEPTH} levels")
        return super().start(tag, attrs)

    def end(self, tag: str) -> ET.Element:
        """Close an element."""
        self._depth -= 1
        return super().end(tag)


def encode(text: object, *, max_bytes: int = MAX_XML_BYTES) -> bytes:
    """
    Check that ``text`` is a string of acceptable size and encode it.

    :returns: the UTF-8 bytes of ``text``.
    :raises InvalidDomainXml: for a non-string, text that is not valid Unicode, or too much of it.
    """
    if not isinstance(text, str):
        raise InvalidDomainXml(f"XML must be a string, got {type(text).__name__}")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidDomainXml(f"not valid Unicode text at character {e.start}") from None
    if len(data) > max_bytes:
        raise InvalidDomainXml(f"too large: {len(data)} bytes (limit {max_bytes})")
    if not data.strip():
        raise InvalidDomainXml("empty document")
    return data


def parse_xml(text: object, *, max_bytes: int = MAX_XML_BYTES) -> ET.Element:
    """
    Parse untrusted XML text into an element tree.

    :param text: the document, as a string.
    :param max_bytes: refuse documents larger than this many bytes (UTF-8).
    :returns: the root element.
    :raises InvalidDomainXml: for anything but a small, well-formed document without a DTD.
    """
    encode(text, max_bytes=max_bytes)
    parser = DET.DefusedXMLParser(
        target=_DepthLimitedBuilder(), forbid_dtd=True, forbid_entities=True, forbid_external=True
    )
    try:
        parser.feed(text)  # as str: the text is Unicode already, whatever its declaration says
        return parser.close()
    except ET.ParseError as e:
        line, column = e.position
        reason = expat.ErrorString(e.code)
        raise InvalidDomainXml(
            f"not well-formed XML at line {line}, column {column + 1}: {reason}"
        ) from None
    except defusedxml.ExternalReferenceForbidden:
        raise InvalidDomainXml("external references are forbidden") from None
    except (defusedxml.DTDForbidden, defusedxml.EntitiesForbidden):
        raise InvalidDomainXml("DTDs and entities are forbidden") from None


def check_xml_chars(key: str, value: str) -> str:
    """
    :returns: ``value`` unchanged.
    :raises InvalidVmParams: naming ``key`` if ``value`` holds a character XML cannot carry.
    """
    bad = _NOT_XML_CHAR.search(value)
    if bad:
        raise InvalidVmParams(
            f"{key} contains a character that XML cannot carry (U+{ord(bad.group()):04X})"
        )
    return value


def escape_text(value: str) -> str:
    """:returns: ``value`` escaped for element content (``\\r`` kept as a character reference)."""
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def escape_attr(value: str) -> str:
    """:returns: ``value`` escaped for a single- or double-quoted attribute value."""
    escaped = escape_text(value).replace('"', "&quot;").replace("'", "&apos;")
    return escaped.replace("\n", "&#10;").replace("\t", "&#9;")


def serialize(element: ET.Element) -> str:
    """:returns: ``element`` as XML text, without the text that follows it in its parent."""
    tail, element.tail = element.tail, None
    try:
        return ET.tostring(element, encoding="unicode")
    finally:
        element.tail = tail


@dataclass(frozen=True)
class ElementSpan:
    """
    Where an element sits in a document, as byte offsets into its UTF-8 encoding.

    :ivar path: the names from the root down to this element, each ``"uri local"`` or ``"local"``.
    :ivar start: offset of the ``<`` of the start tag.
    :ivar tag_end: offset just after the start tag's ``>``.
    :ivar end_tag: offset of the ``</`` of the end tag, or ``None`` for an empty-element tag.
    :ivar end: offset just after the element.
    """

    path: tuple[str, ...]
    start: int
    tag_end: int
    end_tag: int | None
    end: int


def element_spans(data: bytes, *, max_depth: int) -> list[ElementSpan]:
    """
    Locate the elements of an already validated document down to ``max_depth`` levels.

    Only call this on bytes that :func:`parse_xml` accepted: the plain expat parser used here
    would otherwise see DTDs.

    :returns: the spans in document order of their end.
    """
    parser = expat.ParserCreate(encoding="UTF-8", namespace_separator=" ")
    stack: list[tuple[str, int, int]] = []
    spans: list[ElementSpan] = []

    def start(name: str, _attrs: object) -> None:
        begin = parser.CurrentByteIndex
        stack.append((name, begin, _tag_end(data, begin)))

    def end(_name: str) -> None:
        path = tuple(name for name, _, _ in stack)
        _, begin, tag_end = stack.pop()
        if len(path) > max_depth:
            return
        if data[tag_end - 2 : tag_end] == b"/>":
            spans.append(ElementSpan(path, begin, tag_end, None, tag_end))
        else:
            end_tag = parser.CurrentByteIndex
            spans.append(ElementSpan(path, begin, tag_end, end_tag, data.index(b">", end_tag) + 1))

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.Parse(data, True)
    return spans


def _tag_end(data: bytes, start: int) -> int:
    """:returns: the offset just after the tag that begins at ``start`` (quotes respected)."""
    quote = 0
    for i in range(start + 1, len(data)):
        c = data[i]
        if quote:
            if c == quote:
                quote = 0
        elif c in b"\"'":
            quote = c
        elif c == ord(">"):
            return i + 1
    raise InvalidDomainXml("unterminated tag")


def tag_name(data: bytes, span: ElementSpan) -> str:
    """:returns: the element's name as written in the document (with its prefix)."""
    tag = data[span.start + 1 : span.tag_end].decode("utf-8")
    return re.split(r"[\s/>]", tag, maxsplit=1)[0]


def set_attribute(data: bytes, span: ElementSpan, name: str, value: str) -> bytes:
    """:returns: ``data`` with attribute ``name`` of the element at ``span`` set to ``value``."""
    tag = data[span.start : span.tag_end].decode("utf-8")
    new = f"{name}='{escape_attr(value)}'"
    for match in _ATTRIBUTE.finditer(tag):
        if match.group(1) == name:
            tag = tag[: match.start(1)] + new + tag[match.end(2) :]
            break
    else:
        head = len(tag_name(data, span)) + 1
        tag = f"{tag[:head]} {new}{tag[head:]}"
    return data[: span.start] + tag.encode("utf-8") + data[span.tag_end :]


def splice(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """:returns: ``data`` with each ``(start, end, replacement)`` applied (no overlaps)."""
    for start, end, replacement in sorted(edits, reverse=True):
        data = data[:start] + replacement + data[end:]
    return data
