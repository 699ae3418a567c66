"""The one base class of problems of the run itself (a bad flag or config, an unreadable source, an
output that cannot be written or is held by another writer, a model or caption server that cannot be
set up): never recorded as data; the CLI prints it as one line on stderr and exits with status 2."""


class RunError(Exception):
    """A problem of the run, not of any clip; its message is one line for the user."""


class ConfigError(RunError, ValueError):
    """A configuration problem, phrased as one line for the user."""
