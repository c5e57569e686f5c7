"""The project's user-facing error type (torch-free, importable by every layer).

A :class:`UserError` is a mistake in what the user gave (a file, a field, a flag), not a bug: command-line tools
run through :func:`mmdet_custom.utils.cli.run_cli` print its message alone and exit with code 2. Its message names
the file and field at fault and says what to do.
"""


class UserError(Exception):
    """A mistake in the user's input: the message names the file (and field) and what to do.

    Subclass it (together with the builtin type callers may already catch, e.g. ``ValueError``) for the errors of
    one tool, e.g. ``class ISAIDConversionError(UserError, ValueError)``.
    """
