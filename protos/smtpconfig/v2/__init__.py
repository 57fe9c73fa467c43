"""Generated code for package smtpconfig.v2. Regenerate with `make proto`."""
