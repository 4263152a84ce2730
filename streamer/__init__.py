"""The live pipeline, installed as ``luvnet.streamer``: source -> preprocess -> embed -> head
-> publish. It defines the interfaces plugins implement (``frame_source``) and never imports a
plugin; sources are found through the ``luvnet.sources`` entry points."""
