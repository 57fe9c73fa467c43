"""Generated protobuf and gRPC code for the smtpconfig API (`smtpconfig.v1`, `smtpconfig.v2`)."""
