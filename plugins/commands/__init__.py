"""Built-in commands plugins."""
