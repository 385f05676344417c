"""The ``harness`` command line: commands, shared options, sweep executors.

The top layer: may import every package. Imports torch only in the commands that train.
"""
