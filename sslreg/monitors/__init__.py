"""Built-in monitors, registered through the same hook a third-party plugin uses."""
