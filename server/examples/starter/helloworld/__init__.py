"""The aaas hello-world example (seed 001): `starter.helloworld.auto`."""
