"""The package version. Stage stamps record it: raise it whenever a change alters what a tool
or an experiment writes, so every output made by the older code is redone."""

__version__ = "0.2.0"
