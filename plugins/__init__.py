"""Frame sources and score consumers, discoverable through entry points."""
