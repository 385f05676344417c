"""Built-in backbones plugins."""
