"""Ops' TOML files (the policy, the FAQ bot): validated at load with errors that name the key,
and re-read when they change, keeping the last good content when an edit is bad."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError


class StrictModel(BaseModel):
    """A table of an ops file: an unknown key is an error (a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class OpsFileError(ValueError):
    """An ops file is unreadable or invalid; the message names the key, never the whole text."""


Model = TypeVar("Model", bound=BaseModel)


def describe(error: ValidationError, path: Path, *, what: str) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        given = item.get("input")
        shown = ""
        # A secret (an endpoint's, a bot's) is named, never repeated: the error is logged.
        secret = bool(item["loc"]) and str(item["loc"][-1]) == "secret"
        if not isinstance(given, dict | list) and given is not None and not secret:
            text = repr(given)
            # A long text (an answer of the FAQ bot) is named by its key, not repeated.
            shown = f" (got {text[:60]}…)" if len(text) > 80 else f" (got {text})"
        lines.append(f"  {key}: {message}{shown}")
    return f"invalid {what} file {path}:\n" + "\n".join(lines)


def read_model(
    path: Path, model: type[Model], *, what: str, error: type[OpsFileError]
) -> tuple[Model, str]:
    """The file validated as `model`, and its version (a hash of its text)."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except FileNotFoundError:
        raise error(f"{what} file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"invalid {what} file {path}: {exc}") from None
    try:
        content = model.model_validate(raw)
    except ValidationError as exc:
        raise error(describe(exc, path, what=what)) from None
    return content, hashlib.sha256(text.encode()).hexdigest()[:12]


def one_line(error: OpsFileError) -> str:
    """'invalid policy file p: key: why (got value); key: …' for a log line."""
    first, *problems = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join([first, "; ".join(problems)]).strip()


class Versioned(Protocol):
    @property
    def version(self) -> str: ...


Content = TypeVar("Content", bound=Versioned)


class OpsFileSource(Generic[Content]):
    """A file's current content, re-read when the file changes (looked at on every use, so no
    restart and no watcher thread); a bad edit keeps the last good one and says why in
    `last_error`."""

    def __init__(
        self,
        path: Path,
        *,
        load: Callable[[Path], Content],
        error: type[OpsFileError],
        log: logging.Logger,
        what: str,
    ) -> None:
        self.path = path
        self._load_file = load
        self._error = error
        self._log = log
        self._what = what
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self._content = load(path)  # a bad file at start is refused here
        self.loaded_at = datetime.now(UTC)
        self.last_error: str | None = None

    def _file_stamp(self) -> tuple[int, int]:
        stat = self.path.stat()
        return stat.st_mtime_ns, stat.st_size

    def current(self) -> Content:
        with self._lock:
            try:
                stamp = self._file_stamp()
            except OSError:
                return self._content
            if stamp != self._stamp:
                self._stamp = stamp
                with contextlib.suppress(self._error):  # kept in last_error; the last good stays
                    self._load()
            return self._content

    def reload(self) -> Content:
        """Read the file now. A bad file raises the source's error and the last good content
        stays."""
        with self._lock:
            with contextlib.suppress(OSError):  # a missing file is named by _load
                self._stamp = self._file_stamp()
            self._load()
            return self._content

    def _load(self) -> None:
        try:
            content = self._load_file(self.path)
        except self._error as exc:
            self.last_error = str(exc)
            # Ops' own file, never customer data: the key and the value, on one line.
            self._log.warning(
                "%s edit refused, the last good %s stays: %s", self._what, self._what, one_line(exc)
            )
            raise
        if content.version != self._content.version:
            self.loaded_at = datetime.now(UTC)
        self._content = content
        self.last_error = None
