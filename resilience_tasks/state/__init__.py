"""Redis connection and key names: the bottom layer."""
