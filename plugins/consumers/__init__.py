"""Score consumers: listen, record, overlay."""
