"""Frame sources: one interface, chosen by URI (see plugins.sources.base)."""
