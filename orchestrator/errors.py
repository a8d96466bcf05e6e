"""Errors the CLI turns into exit codes (2: usage and configuration errors)."""

from __future__ import annotations


class ConfigError(Exception):
    """A problem with an experiment file. Exit code 2; nothing is started or written.

    The message names the file, the line (when known) and the key path, e.g.
    ``experiments/x.yaml:12: matrix.rank_k[1]: must be an integer >= 1, got 0``.
    """

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, key: str | None = None) -> None:
        self.path, self.line, self.key, self.detail = path, line, key, message
        where = path or "<config>"
        if line is not None:
            where += f":{line}"
        prefix = f"{where}: " + (f"{key}: " if key else "")
        super().__init__(prefix + message)


class UsageError(Exception):
    """Bad command-line usage (exit code 2)."""

    exit_code = 2
