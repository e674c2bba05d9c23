"""The one exception type the CLI turns into a one-line message and exit code 2."""


class ToolkitError(Exception):
    """Bad input or an unmet requirement, explained in one line for the user (no traceback)."""


class NotAvailableError(ToolkitError):
    """A command or feature that cannot run here (not built yet, or needs hardware this machine lacks)."""
