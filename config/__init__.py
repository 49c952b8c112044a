"""Typed settings (pydantic-settings) and the root of the error hierarchy.

Holds no runtime state. May import: nothing of Xueliang (every other package imports it).
"""
