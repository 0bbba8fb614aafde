"""The one exception type of the run layer: its message is meant for the user as is."""


class RunError(RuntimeError):
    """A refused or failed run operation, with a message saying why and what to do."""
