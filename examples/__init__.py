"""Example workflows: ``--app examples`` loads all of them."""

from . import approval, batch, onboarding, signup  # noqa: F401  (registers the workflows)
