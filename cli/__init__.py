"""The `ouro` command line: one thin Typer module per subcommand."""
