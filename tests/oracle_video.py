"""The oracle backend's old home (kept for test modules that import it from here): see d4rt.data.oracle_video."""

from d4rt.data.oracle_video import OracleVideo, ground_truth_poses, oracle_runtime, render  # noqa: F401
