"""User-facing errors: one line that names the file and the fix; the CLI prints them without a traceback."""


class UserError(Exception):
    """Bad input from the user (a file, an option, a checkpoint). The message is the whole story."""


class DataError(UserError, ValueError):
    """A data file is unreadable, malformed or inconsistent with its description."""


class ConfigError(UserError, ValueError):
    """A configuration value out of its range (the CLI's ``--set section.field=value``)."""
