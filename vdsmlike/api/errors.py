"""Typed errors carrying VDSM's codes and messages, and the JSON-RPC protocol errors.

A verb handler raises one of these; the RPC boundary turns it into
``{"code": N, "message": "<VDSM message>[: {context}]"}``. Anything else a handler raises becomes
code 100 ("General Exception") on the wire, with the traceback only in the log.
"""

from __future__ import annotations

from typing import Any


class RpcError(Exception):
    """An error that has a JSON-RPC error object: a code and a message."""

    code: int = -32603
    message: str = "Internal error"

    def __init__(self, detail: str | None = None, **context: Any) -> None:
        self.detail = detail
        self.context = context
        super().__init__(self.wire_message())

    def wire_message(self) -> str:
        """The ``message`` member of the error object, as VDSM formats it."""
        text = self.message
        if self.detail:
            text = f"{text}: {self.detail}"
        if self.context:
            text = f"{text}: {self.context!r}"
        return text

    def to_error_object(self) -> dict[str, Any]:
        """:returns: the JSON-RPC ``error`` member."""
        return {"code": self.code, "message": self.wire_message()}


# JSON-RPC 2.0 protocol errors.


class ParseError(RpcError):
    code, message = -32700, "Parse error"


class InvalidRequest(RpcError):
    code, message = -32600, "Invalid request"


class MethodNotFound(RpcError):
    code, message = -32601, "Method not found"


class InvalidParams(RpcError):
    code, message = -32602, "Invalid params"


class InternalError(RpcError):
    code, message = -32603, "Internal JSON-RPC error"


# VDSM's errors (lib/vdsm/common/define.py, lib/vdsm/common/exception.py).


class VdsmError(RpcError):
    """Base of the errors with VDSM codes."""


class NoSuchVM(VdsmError):
    code, message = 1, "Virtual machine does not exist"


class VMExists(VdsmError):
    code, message = 4, "Virtual machine already exists"


class VMIsDown(VdsmError):
    code, message = 6, "Virtual machine is down"


class CreateError(VdsmError):
    code, message = 9, "Error creating the requested VM"


class MissingParameter(VdsmError):
    code, message = 11, "Missing required parameter"


class MigrateError(VdsmError):
    """VDSM's ``migrateErr``: a migration could not be done (the reason follows)."""

    code, message = 12, "Fatal error during migration"


class OutOfMemory(VdsmError):
    code, message = 14, "Not enough free memory to create VM"


class UnexpectedError(VdsmError):
    code, message = 16, "Unexpected exception"


class ResourceUnavailable(VdsmError):
    code, message = 40, "Resource unavailable"


class DestroyError(VdsmError):
    code, message = 42, "Virtual machine destroy error"


class NotImplementedVerb(VdsmError):
    code, message = 44, "Not implemented"


class HotplugDiskError(VdsmError):
    code, message = 45, "Failed to hotplug disk"


class HotunplugDiskError(VdsmError):
    code, message = 46, "Failed to hotunplug disk"


class HotplugNicError(VdsmError):
    code, message = 49, "Failed to hotplug NIC"


class HotunplugNicError(VdsmError):
    code, message = 50, "Failed to hotunplug NIC"


class ApiHookError(VdsmError):
    """A ``before_get_*`` hook refused an API call (VDSM's ``hookError``)."""

    code, message = 78, "Hook error"


class MigrationCancelError(VdsmError):
    """VDSM's ``migCancelErr``: ``VM.migrateCancel`` for a VM that is not migrating."""

    code, message = 47, "Migration not in progress"


class MigrationInProgress(VdsmError):
    code, message = 51, "Command not supported during migration"


class MigrationNotInProgress(VdsmError):
    """VDSM's ``migNotInProgress``: a migration verb for a VM that is not migrating."""

    code, message = 81, "Migration not in progress"


class MigrationLimit(VdsmError):
    """VDSM's ``migrateLimit``: the destination already receives its limit of migrations."""

    code, message = 82, "Incoming migration limit exceeded"


class BalloonError(VdsmError):
    code, message = 53, "Balloon operation is not available"


class HardwareInfoError(VdsmError):
    code, message = 57, "Failed to read hardware information"


class CpuTuneError(VdsmError):
    code, message = 62, "CpuTune operation is not available"


class IoTuneError(VdsmError):
    """VDSM's ``UpdateIOTuneError``: an unknown disk, a bad ioTune value, or libvirt refused."""

    code, message = 64, "Failed to update ioTune values"


class MomPolicyError(VdsmError):
    """VDSM's ``momErr``: the MOM policy (or its parameters) was refused or MOM is off."""

    code, message = 54, "Failed to set mom policy"


class KsmTuneError(VdsmError):
    """VDSM's ``KSMUpdateFailed``: a KSM knob or value refused, or the sysfs write failed."""

    code, message = 71, "Failed to update KSM values"


class UnsupportedOperation(VdsmError):
    code, message = 75, "Operation not supported"


class ResetError(VdsmError):
    code, message = 90, "Failed to reset VM"


class InvalidParameter(VdsmError):
    code, message = 91, "Invalid parameter"


class Recovering(VdsmError):
    code, message = 99, "Recovering from crash or Initializing"


class GeneralException(VdsmError):
    code, message = 100, "General Exception"


class ResourceExhausted(VdsmError):
    code, message = 1100, "Not enough resources"


class HookError(VdsmError):
    code, message = 1500, "Hook Error"


class Unauthorized(VdsmError):
    """Not VDSM's (it authenticates with TLS client certificates); ours for token auth."""

    code, message = 401, "Not authorized"
