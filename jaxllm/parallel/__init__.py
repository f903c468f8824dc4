"""Device mesh and the logical-axis sharding rules."""
