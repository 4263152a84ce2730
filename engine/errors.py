"""The one user-facing error type: printed by the CLI as a single line, never a traceback."""


class LuvnetError(Exception):
    """Bad input or a missing prerequisite. The message names the file/field, the bad value,
    what was expected and, where there is one, the fix."""
