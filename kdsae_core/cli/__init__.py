"""The `kdsae` command: argparse only, one module per verb. Verbs import the library when they run, so
`kdsae --help` starts without torch."""
