"""What the tests share and are not tests themselves: real servers to run against (OpenBao, SMTP,
an OAuth token endpoint, a test CA, a loopback Vault stand-in), the service on port 0, and helpers
and documents several test modules use.

Test modules import from here, never from one another or from conftest.py. Kits that offer
fixtures are loaded by tests/conftest.py through `pytest_plugins`, so a test names the fixture as
an argument and imports nothing for it.
"""
