"""The sparrowlib package."""
