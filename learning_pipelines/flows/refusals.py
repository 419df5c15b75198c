"""A recipe that will not run on the warehouse as it stands."""


class Refused(Exception):
    """Raised by a recipe that will not run on the warehouse as it stands (no reviews yet, no global weights yet,
    states that miss reviews...): its message says why and what to run first, for the person who launched it.
    Running it again unchanged would only fail again."""
