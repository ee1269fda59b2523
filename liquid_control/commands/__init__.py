"""One module per `liquid-control` subcommand: add_arguments(parser) and run(args)."""
