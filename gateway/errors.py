"""Errors that stop the gateway before it serves: each is one line for the user."""


class StartupError(Exception):
    """The gateway cannot start; ``str()`` says why and, where possible, what to do."""
