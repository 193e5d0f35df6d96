"""Built-in backbones, registered through the same hook a third-party plugin uses."""
