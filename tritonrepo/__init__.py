"""Triton model repository platform: specs, config rendering, local server runtime, export, clients, perf.

Importing this package is cheap (stdlib only): the clients are installed and imported without torch or transformers.
"""

__version__ = "0.1.0"
