"""Built-in views, registered through the same hook a third-party plugin uses."""
