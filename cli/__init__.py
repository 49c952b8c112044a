"""The ``xueliang`` command line: serve, demo, analyze, token, secrets, audit.

The entry point of the process, at the top of the stack. May import every package.
"""
