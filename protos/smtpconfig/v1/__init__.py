"""Generated code for package smtpconfig.v1. Regenerate with `make proto`."""
