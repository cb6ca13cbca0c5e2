"""The release version, shown by ``--version`` and in component records."""

__version__ = "11.1.0.dev0"
version_string = __version__
