"""autogolf: the autoresearch loop daemon for the parameter-golf MLX trainer.

Import package `loop`; console script `autogolf` (see loop/ui/cli.py).
"""

__version__ = "0.1.0"
