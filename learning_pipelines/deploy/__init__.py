"""The production topology: the local stack (`make stack`) and `deploy verify`, which checks a deployment."""
