"""LUV-Net, installed as ``luvnet.engine``: rooms ``model``, ``data``, ``training``,
``evaluation`` and ``backends``, and the few modules every room may use (``errors``, ``files``,
``runtime``, ``progress``). Dependencies point one way: model <- data <- evaluation <- training;
backends use the model only (tests/test_architecture.py checks it)."""
