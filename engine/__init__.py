"""Runtime: engine interface and backends, preprocessing, optical flow, sources, pipeline.

Only ``engine.backends.torch_backend`` imports torch; everything else here runs without it.
"""
