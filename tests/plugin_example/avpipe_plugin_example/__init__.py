"""Example avpipe plug-in package (see docs/EXTENDING.md)."""
