"""One module per CLI subcommand: HELP, add_arguments(parser), main(args) -> int."""
