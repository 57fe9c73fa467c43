"""The gRPC adapter: servicers, the per-call guard, status mapping, conversion between protobuf
messages and the domain model, authentication, limits and TLS. The only layer that speaks protobuf."""
