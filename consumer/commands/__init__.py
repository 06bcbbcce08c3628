"""One module per CLI subcommand: HELP, add_arguments(parser), main(args) -> int."""

# the subcommand modules (imported on use by consumer.cli)
__all__ = ["board", "check_config", "demo", "events", "run", "simulate", "token"]
