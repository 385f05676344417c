"""Built-in plugins, installed as the package ``harness_plugins``.

Each module registers through the ``harness`` entry-point group, like any third-party plugin.
"""
