"""Helpers shared by the tests: harnesses, reference models, inputs."""
