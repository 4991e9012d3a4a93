"""SMTP syntax with no I/O: paths and parameters, command lines, the DATA stream.

Pure functions and small state machines that the session drives and tests can exercise
byte by byte (``tests/test_smtp_properties.py``): nothing here reads a socket, knows a
check or decides a verdict.
"""
