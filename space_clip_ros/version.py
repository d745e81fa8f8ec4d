"""The package's version: the one place it is written (setup.py reads it; package.xml must say the same, a test
checks)."""

__version__ = "0.1.0"
