"""Where relayed records go: stdout, files, and (later) brokers."""
