"""Built-in methods plugins."""
