"""The detector runtime: pre/post-processing, ONNX model info, inference backends, the
loader and engine cache. A layer of its own that the agent and the controller both use;
it imports only edgefleet.shared (tests/test_layers.py)."""
