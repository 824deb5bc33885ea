"""The installed version, read from the distribution's metadata.

The distribution is named ``analogsim-jax`` on the package index (``analogsim`` there is an
unrelated project); the import name is ``analogsim``.
"""

from importlib import metadata

DISTRIBUTION = "analogsim-jax"

try:
    __version__ = metadata.version(DISTRIBUTION)
except metadata.PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"
