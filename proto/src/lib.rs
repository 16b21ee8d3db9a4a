//! Protobuf messages and gRPC services generated from the `.proto` files in this crate.
