"""Built-in protocols plugins."""
