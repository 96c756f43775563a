"""The one exception type for user mistakes.

Anything a user can fix (a bad path, wrong shapes, a one-class task, a corrupt file) raises
:class:`TaskspaceError` with a message that names the problem and what to do. The CLI turns
it into one line on stderr and exit status 2; programming errors keep their tracebacks.
"""


class TaskspaceError(Exception):
    """A user-facing error: bad input, bad configuration, unreadable file."""
