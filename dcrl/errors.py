"""The one exception type for problems a user can fix, and how the command line shows it.

A `UserError` is a bad input (a config value, a data row, a reward function, a prompt longer than
the model's context) or a broken environment (a read-only output directory, a full disk). Its
message names the input, the problem and the fix. Every `dcrl` command prints it as one
`error: ...` line on stderr and exits with status 2; any other exception is a bug in dcrl and
keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; the message names the input, the problem and the fix."""


def one_line(error: BaseException) -> str:
    """The error's message on one line (a multi-line message joined with "; ")."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__
