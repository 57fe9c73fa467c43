"""The domain: the profile and provider-instance model, validation, the use cases that store and
resolve them, and their encryption at rest. Plain typed Python: no grpc, protobuf, sqlite or argparse."""
