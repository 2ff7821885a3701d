"""Generated protobuf / gRPC code of proto/facemask/v1 (do not edit; `make proto`)."""
