"""Built-in objectives, registered through the same hook a third-party plugin uses."""
