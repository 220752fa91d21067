"""Error types: the CLI turns a `UserError` into one red line and exit code 1."""


class UserError(Exception):
    """Bad input, config or environment that the user can fix; the message says where and what to do."""
