"""Built-in augmentations plugins."""
