"""certero-flow-exporter: proves each network flow of a Certero deployment is open and answered."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("certero-flow-exporter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
