"""On-device few-shot runtime: verify a signed ONNX export, adapt on a support set, classify.

Depends on numpy, onnxruntime, grpcio, protobuf, cryptography and Pillow only; never on
torch (a test runs it with torch blocked).
"""
