"""Everything Dagster discovers (`load_from_defs_folder` in definitions.py): one module per area."""

import warnings

import dagster as dg

# review_logs' checks are partitioned by month as the asset is (each month's reject rate), with a Dagster feature
# still marked preview: chosen knowingly, so its warning would only repeat that to every command, run and demo.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec",
                        category=dg.PreviewWarning)
