"""Built-in data, registered through the same hook a third-party plugin uses."""
