"""Recipes: each a plain function that loads through db/, computes in domain/ and writes through db/, in the
transactions it names, and returns a small frozen summary. No Dagster here: assets, benches and `deploy verify`
call the same recipe."""
