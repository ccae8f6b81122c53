"""gRPC: the avatar node's wire adapter of the pipeline (`avatar_node.pipeline`)."""
