"""First-party secret providers. They use only the public plugin API, as third-party ones do."""
