"""Stand-in for xformers (see tests/standins/_math.py): the parts of ``xformers.ops.fmha`` the
attnparity adapter uses, with xformers' documented layouts and input checks."""

__version__ = "0.0.99+standin"
