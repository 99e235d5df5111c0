"""The policy store: named policy texts, checked as one program, evaluated once per cycle.

MOM keeps a dict ``name -> source``. The program is the sources sorted by name and joined with
``"\\n"`` (``"0"`` when there are none), so ``00-defines`` runs before ``02-balloon``; VDSM
relies on that order and replaces single entries at run time (``01-parameters``). Every change
re-parses the whole concatenation and is undone if it no longer parses.

Evaluation uses a fresh ``Evaluator`` each cycle with the globals ``Host`` (an ``Entity``) and
``Guests`` (a list of them); the policy's only lasting effect is the controls it sets on them.
Any error is logged and makes ``evaluate`` return False, and the caller then skips every
controller for that cycle.

Difference from MOM: parsing here raises nothing but ``PolicyError``, so a text that MOM would
store and then fail on forever (a comment-only policy stored alone, which MOM's parser fails on
with ``IndexError``) is refused: ``set_policy`` returns False and the previous texts stay.

Thread safety: one lock guards the texts and the parsed program, so the policy thread can
evaluate while RPC calls replace policies; a cycle runs the program as it was when it started.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Mapping
from os import PathLike
from pathlib import Path

from twisted.logger import Logger

from .entity import Entity
from .errors import PolicyError
from .evaluator import Evaluator
from .parser import Node, parse

DEFAULT_POLICY_NAME = "50_main_"
EMPTY_PROGRAM = "0"  # MOM's stand-in for "no policy": its parser cannot take an empty program
POLICY_SUFFIX = ".policy"


def concatenate(named: Mapping[str, str]) -> str:
    """Join policy texts the way MOM does.

    :param named: policy name to source.
    :returns: the sources sorted by name joined with newlines, or ``"0"`` if that is empty.
    """
    return "\n".join(named[name] for name in sorted(named)) or EMPTY_PROGRAM


def policy_name(path: str | PathLike[str]) -> str:
    """:returns: the policy name of a file: its base name without a ``.policy`` suffix."""
    name = Path(path).name
    return name[: -len(POLICY_SUFFIX)] if name.endswith(POLICY_SUFFIX) else name


class PolicyStore:
    """Named policy texts, their parsed concatenation, and evaluation against entities."""

    log = Logger()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._texts: dict[str, str] = {}
        self._code: list[Node] = []

    def set_policy(self, name: str | None, text: str | None) -> bool:
        """Add, replace or delete one named policy, keeping the whole set parseable.

        :param name: the policy's name; None means MOM's default ``50_main_``.
        :param text: the source; None deletes the policy.
        :returns: True if the new set parses; False if it does not, in which case nothing
            changed (the reason is logged).
        :raises TypeError: when ``text`` is neither a string nor None.
        """
        if name is None:
            name = DEFAULT_POLICY_NAME
        if text is not None and not isinstance(text, str):
            raise TypeError(f"policy text must be a str or None, not {type(text).__name__}")
        with self._lock:
            candidate = dict(self._texts)
            if text is None:
                candidate.pop(name, None)
            else:
                candidate[name] = text
            try:
                code = parse(concatenate(candidate))
            except PolicyError as error:
                self.log.warn("Unable to load policy {name!r}: {error}", name=name, error=error)
                return False
            self._texts = candidate
            self._code = code
        if text is None:
            self.log.info("Deleted policy {name!r}", name=name)
        else:
            self.log.info("Loaded policy {name!r}", name=name)
        return True

    def clear(self) -> None:
        """Forget every policy (the program becomes ``"0"``)."""
        with self._lock:
            self._texts = {}
            self._code = []

    def named(self) -> dict[str, str]:
        """:returns: a copy of the policies by name (MOM's ``getNamedPolicies``)."""
        with self._lock:
            return dict(self._texts)

    def text(self) -> str:
        """:returns: the program: the texts sorted by name, or ``"0"`` (MOM's ``getPolicy``)."""
        with self._lock:
            return concatenate(self._texts)

    def load_dir(self, path: str | PathLike[str]) -> dict[str, bool]:
        """Load every ``*.policy`` file of a directory, in name order, through ``set_policy``.

        Dot files are skipped. Each file is named by its base name without ``.policy``, and a
        file that fails (unreadable, or breaking the set) is logged and left out, as in MOM.
        Policies already in the store stay; call ``clear`` first to start afresh.

        :param path: the directory (VDSM's is ``/etc/vdsm/mom.d``).
        :returns: for each file's policy name, whether it was loaded.
        :raises OSError: when the directory cannot be listed.
        """
        loaded: dict[str, bool] = {}
        for entry in sorted(Path(path).iterdir(), key=lambda entry: entry.name):
            if entry.name.startswith(".") or not entry.name.endswith(POLICY_SUFFIX):
                continue
            if not entry.is_file():
                continue
            name = policy_name(entry)
            try:
                text = entry.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                self.log.warn("Cannot read policy {path}: {error}", path=str(entry), error=error)
                loaded[name] = False
                continue
            loaded[name] = self.set_policy(name, text)
        return loaded

    def evaluate(self, host: Entity, guests: Iterable[Entity]) -> bool:
        """Run the program once in a fresh evaluator, with globals ``Host`` and ``Guests``.

        :param host: the host entity; the policy sets its controls (KSM).
        :param guests: the guest entities of the ready guests; the policy sets their controls.
        :returns: True if every form evaluated; False on any error (logged), in which case the
            caller must skip the controllers for this cycle.
        """
        with self._lock:
            code = self._code
        evaluator = Evaluator({"Host": host, "Guests": list(guests)})
        try:
            results = evaluator.eval_forms(code)
        except PolicyError as error:
            self.log.error("Policy error: {error}", error=error)
            return False
        except Exception:  # Evaluator promises PolicyError only; stay alive if that breaks
            self.log.failure("Unexpected error when evaluating policy")
            return False
        self.log.debug("Results: {results!r}", results=results)
        return True


_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def parameters_policy(parameters: Mapping[str, object]) -> str:
    """
    The text of the parameters policy, as VDSM's ``Host.setMOMPolicyParameters`` writes it:
    one ``(set NAME VALUE)`` line per parameter, values in Python's ``repr`` (``True``/``False``
    then resolve through the defines policy, strings become quoted literals).

    :raises ValueError: for a name that is not a plain symbol or a value that is not a bool,
        number or string (a policy could not read it back).
    """
    lines = []
    for name, value in sorted(parameters.items()):
        if not isinstance(name, str) or not _SYMBOL.match(name):
            raise ValueError(f"MOM parameter name {name!r} is not a policy symbol")
        if not isinstance(value, bool | int | float | str) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            raise ValueError(f"MOM parameter {name}: {value!r} is not a bool, number or string")
        if isinstance(value, str) and ("'" in value or "\\" in value or "\n" in value):
            raise ValueError(f"MOM parameter {name}: strings cannot hold quotes or newlines")
        lines.append(f"(set {name} {value!r})")
    return "\n".join(lines)
