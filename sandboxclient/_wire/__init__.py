"""The wire: the gRPC channel over HTTP/2, framing, keepalive, the codecs, the conversion of
protobuf messages to records and back, and the client half of the error mapping. It never
imports a handle."""
