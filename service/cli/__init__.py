"""The command line: `smtpconfig serve` and the client commands. The entry point is `smtpconfig.cli.main:main`;
`python -m smtpconfig.cli` runs the same."""
