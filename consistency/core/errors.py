"""The project's error types, at the bottom of the package: every layer may raise them, none imports a higher
layer to do so."""


class ConfigError(ValueError):
    """A config value, flag, file or workdir that cannot work; the message names the field and the fix.

    The command line prints it as one line and exits with status 2 before anything compiles."""
