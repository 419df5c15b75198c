"""The checks of `deploy verify`, one module per part of the deployment they probe; deploy/verify.py runs them in
order."""
