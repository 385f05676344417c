"""Built-in loggers of training metrics."""
